"""A run directory from start to end, for every kind of model.

    directory.py    claiming a folder for a new run or a resume (its lock, a start killed before its
                    first checkpoint taken over, a failed start undone), and what state a folder is in
    lock.py         one writer at a time: an flock held for the life of the training process
    config_file.py  config.json: its one writer, and reading it back checked field by field
    weights.py      tensor files as safetensors + JSON metadata, with the sha256 of their contents
    load.py         any run directory back into one `Run` (model, tokenizer, configs), every file checked
    imported.py     a Hugging Face GPT-2 folder as a run: imported, exported, read in place
    memory.py       will it fit? a lower bound of the memory a model needs, checked before allocating

Training (kqv.train) claims and writes runs through this package; everything that reads a run
(kqv.families, and through it the page, `kqv inspect`, sampling, evaluation) loads it here.
"""
