-- The PostgreSQL catalog's schema: the same tables as the SQLite catalog's migrations 1 to 4,
-- in PostgreSQL's types.
--
-- Ids are stored as their printed text (`bm_` + fixed-width base62 of a UUIDv7) with the "C"
-- collation, so text order is byte order is creation order whatever the database's locale
-- (lists page by id). Instants are `timestamptz` (microseconds, like the engine). Documents
-- (settings, metric and plan specs, revision changes, customer specs, dialect records) are
-- their canonical serde JSON as text, kept byte for byte (`jsonb` would reorder keys). The
-- `search_*` columns hold lowercased copies (Rust's `to_lowercase`) of what list searches
-- match, so matching is the same as on SQLite.
--
-- Concurrency (several replicas share the database) is handled by the statements, not the
-- schema: see the row locks in `src/catalog/*.rs` and ARCHITECTURE.md.

CREATE TABLE organizations (
    id          TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    name        TEXT NOT NULL,
    settings    TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL
);

-- Only the SHA-256 of a key's secret is kept, never the secret.
CREATE TABLE api_keys (
    id              TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    organization_id TEXT COLLATE "C" NOT NULL REFERENCES organizations (id),
    name            TEXT NOT NULL,
    prefix          TEXT NOT NULL,
    secret_hash     TEXT COLLATE "C" NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL,
    revoked_at      TIMESTAMPTZ,
    last_used_at    TIMESTAMPTZ
);
CREATE UNIQUE INDEX api_keys_secret_hash ON api_keys (secret_hash);
CREATE INDEX api_keys_organization ON api_keys (organization_id, id);

-- `code`, `event_code` and the search columns are copies of the current spec's members,
-- rewritten with every revision.
CREATE TABLE metrics (
    id              TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    organization_id TEXT COLLATE "C" NOT NULL REFERENCES organizations (id),
    code            TEXT COLLATE "C" NOT NULL,
    event_code      TEXT COLLATE "C" NOT NULL,
    search_code     TEXT COLLATE "C" NOT NULL,
    search_name     TEXT COLLATE "C" NOT NULL,
    spec            TEXT NOT NULL,
    revision        BIGINT NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL,
    updated_at      TIMESTAMPTZ NOT NULL,
    archived_at     TIMESTAMPTZ,
    deleted_at      TIMESTAMPTZ
);
-- A code is unique among the organization's live metrics; deleting a metric frees it.
CREATE UNIQUE INDEX metrics_live_code ON metrics (organization_id, code)
    WHERE deleted_at IS NULL;
CREATE INDEX metrics_organization ON metrics (organization_id, id);
CREATE INDEX metrics_live_event_code ON metrics (organization_id, event_code, id)
    WHERE deleted_at IS NULL;

-- The primary key is the last guard of "revisions without gaps or repeats": the revision's
-- transaction holds the metric's row lock while it reads the current number and inserts the next.
CREATE TABLE metric_revisions (
    metric_id     TEXT COLLATE "C" NOT NULL REFERENCES metrics (id),
    revision      BIGINT NOT NULL,
    spec          TEXT NOT NULL,
    changes       TEXT NOT NULL,
    effective_at  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (metric_id, revision)
);

-- Who attaches a metric (a plan, or a label an operator chose): while any attachment
-- remains, the metric's locked fields cannot change (semantics 6.3).
CREATE TABLE metric_attachments (
    metric_id    TEXT COLLATE "C" NOT NULL REFERENCES metrics (id),
    attached_by  TEXT COLLATE "C" NOT NULL,
    attached_at  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (metric_id, attached_by)
);
CREATE INDEX metric_attachments_attached_by ON metric_attachments (attached_by);

-- Deleted customers are kept (events name them), with their external id freed.
CREATE TABLE customers (
    id                  TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    organization_id     TEXT COLLATE "C" NOT NULL REFERENCES organizations (id),
    external_id         TEXT COLLATE "C" NOT NULL,
    search_external_id  TEXT COLLATE "C" NOT NULL,
    search_name         TEXT COLLATE "C" NOT NULL,
    search_email        TEXT COLLATE "C" NOT NULL,
    spec                TEXT NOT NULL,
    created_at          TIMESTAMPTZ NOT NULL,
    updated_at          TIMESTAMPTZ NOT NULL,
    deleted_at          TIMESTAMPTZ
);
CREATE UNIQUE INDEX customers_live_external_id ON customers (organization_id, external_id)
    WHERE deleted_at IS NULL;
CREATE INDEX customers_organization ON customers (organization_id, id);

-- A plan's definition is its canonical serde JSON (`spec`, charges included); `code` and the
-- search columns are copies of its members, rewritten with every replacement. `plan_charges`
-- repeats which metric each charge reads (replaced with the spec), so "which live plans charge
-- this metric" is one indexed query. A plan attaches the metrics its charges read
-- (`metric_attachments.attached_by` = the plan's id) while it is live; every write of a plan
-- updates its attachments in the same transaction.
CREATE TABLE plans (
    id              TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    organization_id TEXT COLLATE "C" NOT NULL REFERENCES organizations (id),
    code            TEXT COLLATE "C" NOT NULL,
    search_code     TEXT COLLATE "C" NOT NULL,
    search_name     TEXT COLLATE "C" NOT NULL,
    spec            TEXT NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL,
    updated_at      TIMESTAMPTZ NOT NULL,
    deleted_at      TIMESTAMPTZ
);
-- A code is unique among the organization's live plans; deleting a plan frees it.
CREATE UNIQUE INDEX plans_live_code ON plans (organization_id, code)
    WHERE deleted_at IS NULL;
CREATE INDEX plans_organization ON plans (organization_id, id);

CREATE TABLE plan_charges (
    charge_id  TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    plan_id    TEXT COLLATE "C" NOT NULL REFERENCES plans (id),
    metric_id  TEXT COLLATE "C" NOT NULL REFERENCES metrics (id),
    position   INTEGER NOT NULL
);
CREATE INDEX plan_charges_plan ON plan_charges (plan_id, position);
CREATE INDEX plan_charges_metric ON plan_charges (metric_id, plan_id);

-- A subscription names its customer by row id, so it follows the customer through a change of
-- external id; it is read back with the customer's current external id. External ids are
-- unique in the organization, terminated subscriptions included: routes address them by it.
-- `billing_anchor` is its text form (`billing_anchor_text`), `timezone` an IANA name.
CREATE TABLE subscriptions (
    id              TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    organization_id TEXT COLLATE "C" NOT NULL REFERENCES organizations (id),
    external_id     TEXT COLLATE "C" NOT NULL,
    customer_id     TEXT COLLATE "C" NOT NULL REFERENCES customers (id),
    plan_id         TEXT COLLATE "C" NOT NULL REFERENCES plans (id),
    name            TEXT,
    started_at      TIMESTAMPTZ NOT NULL,
    ended_at        TIMESTAMPTZ,
    billing_anchor  TEXT NOT NULL,
    timezone        TEXT NOT NULL,
    terminated_at   TIMESTAMPTZ,
    created_at      TIMESTAMPTZ NOT NULL,
    updated_at      TIMESTAMPTZ NOT NULL
);
CREATE UNIQUE INDEX subscriptions_external_id ON subscriptions (organization_id, external_id);
CREATE INDEX subscriptions_organization ON subscriptions (organization_id, id);
CREATE INDEX subscriptions_plan ON subscriptions (plan_id, id);
CREATE INDEX subscriptions_customer ON subscriptions (customer_id, id);

-- Records a dialect keeps for its clients that Odometer's own model has no place for (a
-- Meteroid product family): unique per organization, kind and id; the document is JSON text.
CREATE TABLE dialect_records (
    organization_id TEXT COLLATE "C" NOT NULL REFERENCES organizations (id),
    kind            TEXT COLLATE "C" NOT NULL,
    id              TEXT COLLATE "C" NOT NULL,
    name            TEXT NOT NULL,
    document        TEXT NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (organization_id, kind, id)
);
