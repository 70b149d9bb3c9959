UPDATE points SET config_key = '' WHERE id = 1;
