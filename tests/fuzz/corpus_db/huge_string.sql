UPDATE points SET router = printf('%.*c', 100000, 'r'), distribution = char(27) || '[31m';
