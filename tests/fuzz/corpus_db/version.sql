CREATE TABLE x(a); DROP VIEW IF EXISTS nothing; PRAGMA user_version = 99;
