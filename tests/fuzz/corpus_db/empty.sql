DELETE FROM points;
