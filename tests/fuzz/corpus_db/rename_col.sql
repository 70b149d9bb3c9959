ALTER TABLE points RENAME COLUMN load_imbalance TO li;
