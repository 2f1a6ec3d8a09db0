-- Records a dialect keeps for its clients that Odometer's own model has no place for (a
-- Meteroid product family): unique per organization, kind and id; the document is JSON text.

CREATE TABLE dialect_records (
    organization_id TEXT NOT NULL REFERENCES organizations (id),
    kind            TEXT NOT NULL,
    id              TEXT NOT NULL,
    name            TEXT NOT NULL,
    document        TEXT NOT NULL,
    created_at      TEXT NOT NULL,
    PRIMARY KEY (organization_id, kind, id)
) STRICT, WITHOUT ROWID;
