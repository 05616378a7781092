"""The stock parts of i2i: the CycleGAN paper's generator, discriminator, losses, pool and cycle method."""
