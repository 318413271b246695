"""Paper algorithms that recipes compose, labml-style: each file implements one method as its paper
describes it, with the equations cited, and no training loop of its own.

arithmetic_coding   lossless coding with a model's probabilities (LM-is-compression)
ema   exponential moving average of weights (Polyak averaging; DDPM, DINO's teacher, MAE eval)
masking  masked-LM corruption, 15% with 80/10/10, static (BERT) or dynamic (RoBERTa) masks
Next here: the diffusion process (DDPM), LoRA adapters, NF4 quantisation, PPO's clipped objective.
"""
