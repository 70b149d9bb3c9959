UPDATE points SET load_imbalance = 9e999;
UPDATE points SET token_drop_rate = -9e999 WHERE id = 2;
UPDATE points SET capacity = 4.9406564584124654e-324;
