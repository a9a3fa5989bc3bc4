"""Continued pretraining (TRAINING_MODE = "cpt"): the papers' own text, every token trained, packed into full rows.

Unsloth's continued-pretraining recipe beside its SFT one: no prompt and no chat template, the text of each chunk
followed by EOS, the loss on every token, and (where the input embedding or the LM head is trained) a smaller
learning rate for them. The text is the chunk's own, as 01 wrote it into its `section_summary` / `title_abstract`
record (one per chunk): the train split trains, the test split gives the eval loss. Self-replay rows are chat-format
answers, so cpt mixes none in; a later sft run (INIT_ADAPTER) has them.
"""
from .distributed import say
from .errors import FormattingError
from .settings import TrainSettings, decided_learning_rate
from .tokenizing import TokenizedData

TEXT_TEMPLATES = ("section_summary", "title_abstract")  # the records whose output is a chunk's text
EMBEDDING_MODULES = ("embed_tokens", "lm_head")  # trained whole (PEFT modules_to_save), as Unsloth does


def chunk_texts(records) -> list[str]:
    """The text of each chunk once, in dataset order: the output of its section_summary or title_abstract record."""
    seen, texts = set(), []
    for record in records:
        if record.get("template") not in TEXT_TEMPLATES or not record["output"].strip():
            continue
        key = record.get("chunk_id") or record["output"]
        if key not in seen:
            seen.add(key)
            texts.append(record["output"])
    return texts


def pack_texts(texts: list[str], tokenizer, max_seq_length: int) -> TokenizedData:
    """The texts, each tokenized and followed by EOS, concatenated and cut into rows of max_seq_length tokens (the
    last row shorter); labels = input_ids, so every token is trained."""
    eos = tokenizer.eos_token_id
    stream = []
    for ids in tokenizer(texts)["input_ids"] if texts else []:
        stream += ids if ids and ids[-1] == eos else ids + [eos]
    rows = [{"input_ids": stream[i:i + max_seq_length], "labels": stream[i:i + max_seq_length]}
            for i in range(0, len(stream), max_seq_length)]
    return TokenizedData(rows, n_truncated=0, longest=max((len(r["input_ids"]) for r in rows), default=0))


def packed_text_splits(dataset, tokenizer, max_seq_length: int) -> tuple[TokenizedData, TokenizedData]:
    """(train, test) packed rows of the chunks' text of each split; says what it packed."""
    texts = {split: chunk_texts(dataset[split]) for split in ("train", "test")}
    train, test = (pack_texts(texts[split], tokenizer, max_seq_length) for split in ("train", "test"))
    tokens = sum(len(r["input_ids"]) for r in train.rows)
    say(f"Continued pretraining: the text of {len(texts['train'])} train chunks ({tokens} tokens, EOS after each) "
        f"packed into {len(train.rows)} rows of up to {max_seq_length} tokens, every token trained; "
        f"{len(texts['test'])} test chunks for the eval loss; no self-replay.")
    return train, test


def check_packed(data: TokenizedData) -> None:
    """Stop before training when there is no text to train on."""
    if not data.rows:
        raise FormattingError("The train split has no chunk text (section_summary or title_abstract records) to "
                              "pretrain on: build the dataset with 01_create_dataset.py from PDFs, or use "
                              "--training-mode sft for a dataset of your own rows.")


def trains_embeddings(s: TrainSettings) -> bool:
    return any(module in EMBEDDING_MODULES for module in s.target_modules)


def embedding_learning_rate(s: TrainSettings) -> float | None:
    """The learning rate of the input embedding and LM head where they are trained (None: they are not)."""
    if not trains_embeddings(s):
        return None
    return s.embedding_learning_rate if s.embedding_learning_rate is not None else decided_learning_rate(s) / 10
