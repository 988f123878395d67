int rigtune_probe() { return 0; }
