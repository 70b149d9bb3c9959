UPDATE points SET load_imbalance = 'abc', token_drop_rate = x'00ff', capacity = NULL;
