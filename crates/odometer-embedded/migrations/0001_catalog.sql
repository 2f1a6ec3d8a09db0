-- The catalog's first schema: organizations, API keys, metrics and their revisions, customers.
--
-- Ids are stored as their printed text (`bm_` + fixed-width base62 of a UUIDv7), so text
-- order is creation order and lists page by id. Instants are RFC 3339 text with exactly six
-- fractional digits and `Z`, so text order is time order. Documents (settings, metric specs,
-- revision changes, customer specs) are their canonical serde JSON. The `search_*` columns
-- hold lowercased copies of what list searches match, so matching is case-insensitive beyond
-- ASCII (SQLite's LIKE and lower() only fold ASCII).

CREATE TABLE organizations (
    id          TEXT NOT NULL PRIMARY KEY,
    name        TEXT NOT NULL,
    settings    TEXT NOT NULL,
    created_at  TEXT NOT NULL
) STRICT;

-- Only the SHA-256 of a key's secret is kept, never the secret.
CREATE TABLE api_keys (
    id              TEXT NOT NULL PRIMARY KEY,
    organization_id TEXT NOT NULL REFERENCES organizations (id),
    name            TEXT NOT NULL,
    prefix          TEXT NOT NULL,
    secret_hash     TEXT NOT NULL,
    created_at      TEXT NOT NULL,
    revoked_at      TEXT,
    last_used_at    TEXT
) STRICT;
CREATE UNIQUE INDEX api_keys_secret_hash ON api_keys (secret_hash);
CREATE INDEX api_keys_organization ON api_keys (organization_id, id);

-- `code`, `event_code` and the search columns are copies of the current spec's members,
-- rewritten with every revision.
CREATE TABLE metrics (
    id              TEXT NOT NULL PRIMARY KEY,
    organization_id TEXT NOT NULL REFERENCES organizations (id),
    code            TEXT NOT NULL,
    event_code      TEXT NOT NULL,
    search_code     TEXT NOT NULL,
    search_name     TEXT NOT NULL,
    spec            TEXT NOT NULL,
    revision        INTEGER NOT NULL,
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL,
    archived_at     TEXT,
    deleted_at      TEXT
) STRICT;
-- A code is unique among the organization's live metrics; deleting a metric frees it.
CREATE UNIQUE INDEX metrics_live_code ON metrics (organization_id, code)
    WHERE deleted_at IS NULL;
CREATE INDEX metrics_organization ON metrics (organization_id, id);
CREATE INDEX metrics_live_event_code ON metrics (organization_id, event_code, id)
    WHERE deleted_at IS NULL;

CREATE TABLE metric_revisions (
    metric_id     TEXT NOT NULL REFERENCES metrics (id),
    revision      INTEGER NOT NULL,
    spec          TEXT NOT NULL,
    changes       TEXT NOT NULL,
    effective_at  TEXT NOT NULL,
    PRIMARY KEY (metric_id, revision)
) STRICT, WITHOUT ROWID;

-- Deleted customers are kept (events name them), with their external id freed.
CREATE TABLE customers (
    id                  TEXT NOT NULL PRIMARY KEY,
    organization_id     TEXT NOT NULL REFERENCES organizations (id),
    external_id         TEXT NOT NULL,
    search_external_id  TEXT NOT NULL,
    search_name         TEXT NOT NULL,
    search_email        TEXT NOT NULL,
    spec                TEXT NOT NULL,
    created_at          TEXT NOT NULL,
    updated_at          TEXT NOT NULL,
    deleted_at          TEXT
) STRICT;
CREATE UNIQUE INDEX customers_live_external_id ON customers (organization_id, external_id)
    WHERE deleted_at IS NULL;
CREATE INDEX customers_organization ON customers (organization_id, id);
