UPDATE points SET router = printf('%.*c', 12000, 'r'), distribution = char(27) || '[31m';
