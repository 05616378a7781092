"""Image data: reading and writing image files and arrays, pixel value maps, the seeded data loader."""
