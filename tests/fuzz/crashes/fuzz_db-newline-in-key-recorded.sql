UPDATE points SET config_key = config_key || char(10) || 'x';
