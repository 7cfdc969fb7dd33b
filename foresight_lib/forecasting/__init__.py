"""Models, the backtest runner, metrics and the champion bundle."""
