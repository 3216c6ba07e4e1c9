"""`tunewiz export`: a finished run turned into files that other runtimes load.

A run's ``final/`` is already the Hugging Face format (transformers, peft, the Hub read it). This
package writes what llama.cpp, Ollama and LM Studio read instead: a GGUF file and an Ollama
``Modelfile``. It sits beside ``chat``, ``eval`` and ``push`` in the flow (it reads a run directory and
writes into ``RUN/export/``) and imports only building blocks (models, lora, text, inference's loader).

Modules, one job each:

* :mod:`~tunewiz.export.merged`: the run's merged weights (merging the adapter on the fly when
  ``final/`` holds only the adapter; QLoRA runs from the dequantized NF4 base they trained on).
* :mod:`~tunewiz.export.gguf_arch`: each architecture's GGUF name, hyper-parameters and tensor names.
* :mod:`~tunewiz.export.gguf_vocab`: the tokenizer as GGUF vocabulary keys (SentencePiece and BPE).
* :mod:`~tunewiz.export.gguf_file`: quant types, the disk-space check and the streaming, atomic write.
* :mod:`~tunewiz.export.llama_quantize`: k-quants through llama.cpp's own quantizer.
* :mod:`~tunewiz.export.modelfile`: the Ollama ``Modelfile`` and the commands to run the model.
* :mod:`~tunewiz.export.gguf`: ``export_gguf``, the whole export of one run.
"""
