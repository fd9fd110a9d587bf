"""Language models: GPT (`gpt`), GPT-1 task transforms (`tasks`), and the training code and config
keys the GPT launchers share (`training`, `configs`)."""
