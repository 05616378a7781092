"""Network building blocks the stock networks (and plugins) build from: norms, inits, blur, widths."""
