"""Pure ML: networks, objectives, augmentation, the trainer and distributed setup.

Never imports components/, pipelines/ or the app; the trainer reports through a callback it is given.
"""
