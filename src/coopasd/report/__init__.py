"""What a person reads: the HTML page, figures, plots and console tables."""
