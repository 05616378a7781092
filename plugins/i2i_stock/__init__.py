"""The stock parts of i2i: the CycleGAN paper's generator, discriminator, losses, pool and cycle method, the
related systems' parts, the datasets, the optimizers and schedules, and the callbacks the loop runs by default."""
