ALTER TABLE steps ADD COLUMN "a
b" REAL;
INSERT INTO steps(point, step) VALUES (1, 3);
