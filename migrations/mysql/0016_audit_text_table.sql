-- PostgreSQL's command index moves to a table of its own in this migration (see postgres/0016). Nothing
-- changes here; the file keeps the three folders' numbers in step.
SELECT 1;
