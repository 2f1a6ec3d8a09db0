-- Who attaches a metric (a plan's charge, or a label an operator chose): while any attachment
-- remains, the metric's locked fields cannot change and it cannot be deleted (semantics 6.3).

CREATE TABLE metric_attachments (
    metric_id    TEXT NOT NULL REFERENCES metrics (id),
    attached_by  TEXT NOT NULL,
    attached_at  TEXT NOT NULL,
    PRIMARY KEY (metric_id, attached_by)
) STRICT, WITHOUT ROWID;
