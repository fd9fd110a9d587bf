"""Super-resolution (SRGAN, ESRGAN): pure ops (`ops`) and losses (`losses`), SRResNet / RRDBNet /
VGG networks, weight importers, data, and the training code both launchers share (`training`,
`configs`)."""
