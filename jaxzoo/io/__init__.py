"""File formats read and written without their home frameworks (e.g. PyTorch `.pth`)."""
