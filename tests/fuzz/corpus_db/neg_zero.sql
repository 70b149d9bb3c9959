UPDATE points SET load_imbalance = -0.0, token_drop_rate = 1.7976931348623157e308;
