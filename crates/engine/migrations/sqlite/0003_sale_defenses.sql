-- A sale's waiting room (its settings as JSON, NULL for none) and whether every purchase needs
-- proof of work.
ALTER TABLE sales ADD COLUMN room TEXT;
ALTER TABLE sales ADD COLUMN proof_of_work INTEGER NOT NULL DEFAULT 0;
