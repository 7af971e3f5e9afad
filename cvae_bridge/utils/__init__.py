"""Small shared helpers, below everything else (they import only `errors`):

drawing.py     text on images (Pillow's bitmap font): sample grids' prompts, rollout videos' captions
files.py       atomic folder and file writes, paths confined to a root
lru.py         the one least-recently-used cache
pixels.py      frame, tensor and PIL image conversions shared by data, pipelines and evaluation
phrasings.py   phrasings with a held-out part (instructions, caption templates)
runtime.py     process settings for CPUs (the allocator keeps freed memory)
"""
