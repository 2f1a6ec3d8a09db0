-- Plans, their charges, and subscriptions.
--
-- A plan's definition is its canonical serde JSON (`spec`, charges included); `code` and the
-- search columns are copies of its members, rewritten with every replacement. `plan_charges`
-- repeats which metric each charge reads (replaced with the spec), so "which live plans charge
-- this metric" is one indexed query. A plan attaches the metrics its charges read
-- (`metric_attachments.attached_by` = the plan's id) while it is live; every write of a plan
-- updates its attachments in the same transaction.

CREATE TABLE plans (
    id              TEXT NOT NULL PRIMARY KEY,
    organization_id TEXT NOT NULL REFERENCES organizations (id),
    code            TEXT NOT NULL,
    search_code     TEXT NOT NULL,
    search_name     TEXT NOT NULL,
    spec            TEXT NOT NULL,
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL,
    deleted_at      TEXT
) STRICT;
-- A code is unique among the organization's live plans; deleting a plan frees it.
CREATE UNIQUE INDEX plans_live_code ON plans (organization_id, code)
    WHERE deleted_at IS NULL;
CREATE INDEX plans_organization ON plans (organization_id, id);

CREATE TABLE plan_charges (
    charge_id  TEXT NOT NULL PRIMARY KEY,
    plan_id    TEXT NOT NULL REFERENCES plans (id),
    metric_id  TEXT NOT NULL REFERENCES metrics (id),
    position   INTEGER NOT NULL
) STRICT;
CREATE INDEX plan_charges_plan ON plan_charges (plan_id, position);
CREATE INDEX plan_charges_metric ON plan_charges (metric_id, plan_id);

-- A subscription names its customer by row id, so it follows the customer through a change of
-- external id; it is read back with the customer's current external id. External ids are
-- unique in the organization, terminated subscriptions included: routes address them by it.
-- Instants are RFC 3339 text with six fractional digits and `Z`, so text order is time order
-- (the status filters compare them).
CREATE TABLE subscriptions (
    id              TEXT NOT NULL PRIMARY KEY,
    organization_id TEXT NOT NULL REFERENCES organizations (id),
    external_id     TEXT NOT NULL,
    customer_id     TEXT NOT NULL REFERENCES customers (id),
    plan_id         TEXT NOT NULL REFERENCES plans (id),
    name            TEXT,
    started_at      TEXT NOT NULL,
    ended_at        TEXT,
    billing_anchor  TEXT NOT NULL,
    timezone        TEXT NOT NULL,
    terminated_at   TEXT,
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL
) STRICT;
CREATE UNIQUE INDEX subscriptions_external_id ON subscriptions (organization_id, external_id);
CREATE INDEX subscriptions_organization ON subscriptions (organization_id, id);
CREATE INDEX subscriptions_plan ON subscriptions (plan_id, id);
CREATE INDEX subscriptions_customer ON subscriptions (customer_id, id);
