"""Paper algorithms that recipes compose, labml-style: each file implements one method as its paper
describes it, with the equations cited, and no training loop of its own.

arithmetic_coding   lossless coding with a model's probabilities (LM-is-compression)
ema   exponential moving average of weights (Polyak averaging; DDPM, DINO's teacher, MAE eval)
Next here: the diffusion process (DDPM), LoRA adapters, NF4 quantisation, PPO's clipped objective.
"""
