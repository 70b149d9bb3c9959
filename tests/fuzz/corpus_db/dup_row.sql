INSERT INTO points SELECT * FROM points WHERE id = 1;
