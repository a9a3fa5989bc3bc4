"""Teacher-written questions and answers: an LLM writes them from each chunk, and code checks them against it.

The teacher (QA_TEACHER) is a model run here (transformers, batched; Unsloth on a CUDA GPU) or an OpenAI-compatible
server, `openai:MODEL@URL` (vLLM, Ollama, llama.cpp's server, `transformers serve`, a hosted API; its key from
QA_TEACHER_API_KEY or OPENAI_API_KEY in `.env`, never printed). Each chunk is asked once for QA_PER_CHUNK pairs as a
JSON list. Every reply is cached by (chunk, teacher, prompt version), one appended line each, so a rerun asks
nothing twice and a killed run goes on where it stopped; a request that fails (timeout, rate limit, server error)
is counted and asked again by the next run.

No pair is taken on the teacher's word: every number (with its unit) and every name in an answer must be in the
chunk, the question must not hold its answer, and empty answers, refusals and answers about "the text" go, as do
near-duplicates; an optional judge (QA_JUDGE) scores each pair with the chunk in view. Rejected pairs are counted
by reason and written to `<dataset dir>.qa_rejects.jsonl`, so a user sees why a teacher failed.
"""
import functools
import hashlib
import json
import os
import re
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from .config import ROOT, load_env, redact
from .dataset import _STOPWORDS, deduplicate
from .errors import TeacherError
from .knowledge import _normalise, fact_recalled, key_facts
from .prompts import QA_JUDGE_PROMPT, QA_KINDS, QA_PROMPT_VERSION, QA_TEACHER_PROMPT

CACHE_DIR = ROOT / ".cache" / "teacher"
REJECTS_SUFFIX = ".qa_rejects.jsonl"  # beside the dataset folder: data/dataset.qa_rejects.jsonl
CHUNK_TEMPLATES = ("section_summary", "title_abstract")  # the records whose output is a whole chunk
PROVENANCE = ("source", "title", "section", "page", "chunk_id")
API_KEY_NAMES = ("QA_TEACHER_API_KEY", "OPENAI_API_KEY")
_SERVER = re.compile(r"^openai:(?P<model>.+?)(?:@(?P<url>https?://\S+))?$")
_REFUSAL = re.compile(r"\b(?:i can ?not|i can't|i'm sorry|i am sorry|as an ai|i don't know|i do not know|"
                      r"not (?:mentioned|stated|specified|provided|given|clear)|no information|"
                      r"does(?: not|n't) (?:say|mention|state|specify|provide))\b", re.IGNORECASE)
_ABOUT_THE_TEXT = re.compile(r"\b(?:the|this|that|above|given) (?:text|passage|excerpt|chunk|document|snippet|"
                             r"paragraph)s?\b", re.IGNORECASE)


@dataclass(frozen=True)
class Teacher:
    """A model that writes or judges pairs: run here (`url` None, `server` False) or behind an OpenAI-compatible
    server (`url` None there means the client's default, OPENAI_BASE_URL or OpenAI's own)."""
    model: str
    server: bool = False
    url: str | None = None

    @property
    def label(self) -> str:
        return Path(self.model.rstrip("/")).name or self.model

    @property
    def where(self) -> str:
        return f"the server at {self.url or 'the OpenAI API'}" if self.server else "here"


def parse_teacher(spec: str) -> Teacher | None:
    """QA_TEACHER / QA_JUDGE: "" (none), `openai:MODEL[@URL]` (a server), else a model name or folder run here."""
    spec = spec.strip()
    if not spec:
        return None
    match = _SERVER.match(spec)
    if spec.startswith("openai:") and not match:
        raise TeacherError(f"QA_TEACHER {spec!r} names no model: write openai:MODEL@http://HOST:PORT/v1.")
    return Teacher(model=match["model"], server=True, url=match["url"]) if match else Teacher(model=spec)


@dataclass(frozen=True)
class Asking:
    """How the teacher is asked: reply length and sampling, requests in flight (server) or chunks per batch (here),
    and how often a timeout, rate limit, server error or malformed reply is asked again."""
    max_tokens: int
    temperature: float
    concurrency: int
    batch_size: int
    timeout: float
    retries: int
    seed: int = 0

    @classmethod
    def from_settings(cls, s) -> "Asking":
        return cls(max_tokens=s.qa_max_tokens, temperature=s.qa_temperature, concurrency=s.qa_concurrency,
                   batch_size=s.qa_batch_size, timeout=s.qa_timeout, retries=s.qa_retries, seed=s.seed)


# ---- replies: parsed strictly ----

def _first_json(reply: str, opening: str):
    """The first JSON value that starts with `opening` in a reply (the model may wrap it in prose or a code fence)."""
    start = reply.find(opening)
    if start < 0:
        raise ValueError(f"no JSON {'list' if opening == '[' else 'object'} in the reply")
    return json.JSONDecoder().raw_decode(reply, start)[0]


def parse_pairs(reply: str) -> list:
    """The teacher's JSON list of pairs; ValueError where the reply holds none. Its items are checked by
    `malformed_pair`, one by one."""
    pairs = _first_json(reply, "[")
    if not isinstance(pairs, list):
        raise ValueError("the reply's JSON is not a list")
    return pairs


def malformed_pair(item) -> bool:
    return not (isinstance(item, dict) and isinstance(item.get("question"), str)
                and isinstance(item.get("answer"), str))


def parse_score(reply: str) -> float:
    """The judge's {"score": 1..5}; ValueError where the reply holds none."""
    score = _first_json(reply, "{").get("score")
    if isinstance(score, bool) or not isinstance(score, (int, float)) or not 1 <= score <= 5:
        raise ValueError(f"no score from 1 to 5 in the judge's reply: {score!r}")
    return float(score)


def _counted(parse):
    """count(reply): how many items a reply holds (pairs; 1 for a score), None where it is malformed."""
    def count(reply: str) -> int | None:
        try:
            parsed = parse(reply)
        except ValueError:
            return None
        return len(parsed) if isinstance(parsed, list) else 1
    return count


# ---- the check against the chunk ----

def ungrounded_facts(answer: str, chunk_text: str) -> list[str]:
    """Numbers (with their unit) and names of the answer that are not in the chunk, normalised."""
    def in_chunk(fact):
        spaced = re.sub(r"(?<=\d)(?=[^\d\s.,%])", " ", fact)  # 38mm is the chunk's 38 mm
        return fact_recalled(chunk_text, fact) or fact_recalled(chunk_text, spaced)
    return [fact for fact in key_facts(answer) if not in_chunk(fact)]


def _content_words(text: str) -> set[str]:
    return {w for w in re.findall(r"[a-z0-9]+", _normalise(text)) if w not in _STOPWORDS}


def holds_its_answer(question: str, answer: str) -> bool:
    """The question already says what the answer says: its words are all in the question."""
    answer_words = _content_words(answer)
    return _normalise(answer) in _normalise(question) or answer_words <= _content_words(question)


def rejection(pair: dict, chunk_text: str) -> tuple[str, str] | None:
    """(reason, detail) where a pair is not true to its chunk or is no use for training, else None."""
    question, answer = pair["question"].strip(), pair["answer"].strip()
    if not question or not answer:
        return "empty", ""
    if _REFUSAL.search(answer):
        return "refusal", _REFUSAL.search(answer).group(0)
    about = _ABOUT_THE_TEXT.search(question) or _ABOUT_THE_TEXT.search(answer)
    if about:
        return "about_the_text", about.group(0)
    ungrounded = ungrounded_facts(answer, chunk_text)
    numbers = [f for f in ungrounded if re.search(r"\d", f)]
    if numbers:
        return "number_not_in_chunk", ", ".join(numbers)
    if ungrounded:
        return "name_not_in_chunk", ", ".join(ungrounded)
    if holds_its_answer(question, answer):
        return "answer_in_question", ""
    return None


# ---- the cache ----

class ReplyCache:
    """Replies by key in one JSONL file, each appended and flushed as it comes: a killed run keeps every finished
    reply (a line cut short by the kill is skipped when read)."""

    def __init__(self, path):
        self.path = Path(path)
        self.replies = {}
        if self.path.exists():
            for line in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    row = json.loads(line)
                    self.replies[row["key"]] = row["reply"]
                except (json.JSONDecodeError, KeyError, TypeError):
                    continue

    def __contains__(self, key) -> bool:
        return key in self.replies

    def add(self, key: str, reply: str, **about) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as out:
            out.write(json.dumps({"key": key, **about, "reply": reply}, ensure_ascii=False) + "\n")
        self.replies[key] = reply


def cache_file(teacher: Teacher, cache_dir=None) -> Path:
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", teacher.label)
    return Path(cache_dir or CACHE_DIR) / f"{slug}-{hashlib.sha256(teacher.model.encode()).hexdigest()[:12]}.jsonl"


def reply_key(teacher: Teacher, prompt: str) -> str:
    """The same prompt (chunk, pairs asked, prompt version) to the same model: the same key, wherever it runs."""
    return hashlib.sha256(json.dumps([teacher.model, QA_PROMPT_VERSION, prompt]).encode()).hexdigest()


# ---- asking: a server, or a model run here ----

def api_key() -> str:
    """The teacher server's key from the environment or `.env` ("" where none is set: local servers need none)."""
    load_env()
    return next((os.environ[name] for name in API_KEY_NAMES if os.environ.get(name)), "")


def _client(teacher: Teacher, asking: Asking):
    from openai import OpenAI
    return OpenAI(base_url=teacher.url, api_key=api_key() or "none", timeout=asking.timeout,
                  max_retries=asking.retries)


def _unreachable(teacher: Teacher, why: str, cached: int) -> TeacherError:
    port = re.search(r":(\d+)", (teacher.url or "").split("//")[-1])
    start = f"`transformers serve {teacher.model} --port {port[1] if port else 8000}` (or vllm serve, ollama serve)"
    return TeacherError(redact(f"Cannot reach the teacher server at {teacher.url or 'the OpenAI API'} ({why}): "
                               f"start it, e.g. {start}, or check QA_TEACHER's URL; the {cached} replies cached "
                               f"so far are kept.", api_key()))


def check_server(teacher: Teacher, asking: Asking, cached: int) -> None:
    """Before any chunk is sent: the server answers at all (what it lists under /models differs between servers)."""
    import openai
    try:
        _client(teacher, asking).with_options(max_retries=0, timeout=10).models.list()
    except openai.AuthenticationError:
        raise TeacherError(f"The teacher server at {teacher.url or 'the OpenAI API'} refused the API key: set "
                           f"QA_TEACHER_API_KEY (or OPENAI_API_KEY) in .env.") from None
    except openai.APIConnectionError as error:
        raise _unreachable(teacher, type(error).__name__, cached) from None
    except openai.APIStatusError:
        pass


def _server_replies(teacher: Teacher, prompts: dict[str, str], asking: Asking, failed: dict, cached: int):
    """(key, reply) for each prompt, QA_CONCURRENCY requests in flight; the openai client retries timeouts,
    rate limits and server errors with back-off. A request that still fails is put in `failed` (key -> why);
    a server gone or refusing the requests stops the run (what is cached stays)."""
    import openai
    client = _client(teacher, asking)

    def ask(prompt):
        reply = client.chat.completions.create(model=teacher.model, messages=[{"role": "user", "content": prompt}],
                                               max_tokens=asking.max_tokens, temperature=asking.temperature)
        return (reply.choices[0].message.content or "") if reply.choices else ""

    pool = ThreadPoolExecutor(max_workers=max(1, asking.concurrency))
    futures = {pool.submit(ask, prompt): key for key, prompt in prompts.items()}
    try:
        for future in as_completed(futures):
            try:
                yield futures[future], future.result()
            except openai.APITimeoutError:
                failed[futures[future]] = "timeout"
            except openai.RateLimitError:
                failed[futures[future]] = "rate_limited"
            except openai.InternalServerError as error:
                failed[futures[future]] = f"server_error_{error.status_code}"
            except openai.APIConnectionError as error:
                raise _unreachable(teacher, f"{type(error).__name__} while asking", cached) from None
            except openai.APIStatusError as error:
                detail = redact(str(error).splitlines()[0][:300], api_key())
                raise TeacherError(f"The teacher server at {teacher.url or 'the OpenAI API'} refused a request "
                                   f"({detail}): check that it serves the model {teacher.model!r} (QA_TEACHER) "
                                   f"and its API key.") from None
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


@functools.lru_cache(maxsize=2)
def load_local_teacher(model_name: str):
    """(model, tokenizer) of a teacher run here: Unsloth's fast generation on a CUDA GPU, else transformers."""
    import torch
    from .models import load_causal_lm, load_tokenizer, resolve_model_path, unsloth_available
    path = resolve_model_path(model_name)
    tokenizer = load_tokenizer(path)
    if unsloth_available()[0]:
        from unsloth import FastLanguageModel
        model, _ = FastLanguageModel.from_pretrained(model_name=path, dtype=None, load_in_4bit=False,
                                                     max_seq_length=4096)
        FastLanguageModel.for_inference(model)
        return model, tokenizer
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = load_causal_lm(path, dtype=torch.bfloat16 if device == "cuda" else None, device=device)
    return model.eval(), tokenizer


def local_replies(model, tokenizer, prompts: dict[str, str], asking: Asking, attempt: int = 0):
    """(key, reply) for each prompt, QA_BATCH_SIZE prompts a batch (common.inference.generate_batched)."""
    from .inference import generate_batched
    from .settings import Generation
    generation = Generation(max_new_tokens=asking.max_tokens, temperature=asking.temperature, top_p=0.95,
                            repetition_penalty=1.0, seed=asking.seed + attempt)
    keys = list(prompts)
    for start in range(0, len(keys), asking.batch_size):
        batch = keys[start:start + asking.batch_size]
        try:
            replies = generate_batched(model, tokenizer, [prompts[k] for k in batch], batch_size=len(batch),
                                       prompt_format="chat", generation=generation, progress=False)
        except ValueError as error:  # no chat template
            raise TeacherError(f"The teacher cannot be asked: {error} Use an instruct (chat) model.") from None
        yield from zip(batch, replies)


def ask_all(teacher: Teacher, prompts: dict[str, str], cache: ReplyCache, *, asking: Asking, count, desc: str,
            about: dict | None = None) -> dict[str, str]:
    """Ask `teacher` each prompt whose reply is not cached, caching each reply as it comes. A reply that `count`
    finds malformed (None) is asked again, up to QA_RETRIES times, then cached as it is. Returns the prompts that
    got no reply (key -> why: timeout, rate_limited, server_error_5xx), which a rerun asks again."""
    from tqdm import tqdm
    pending = [key for key in prompts if key not in cache]
    failed = {}
    if not pending:
        return failed
    if teacher.server:
        check_server(teacher, asking, cached=len(cache.replies))
    bar = tqdm(total=len(pending), desc=desc, unit="reply")
    started, items = time.monotonic(), 0
    try:
        for attempt in range(asking.retries + 1):
            asked = {key: prompts[key] for key in pending}
            replies = _server_replies(teacher, asked, asking, failed, len(cache.replies)) if teacher.server else \
                local_replies(*load_local_teacher(teacher.model), asked, asking, attempt)
            pending = []
            for key, reply in replies:
                n = count(reply)
                if n is not None or attempt == asking.retries:
                    cache.add(key, reply, **(about or {}).get(key, {}), attempt=attempt + 1)
                    items += n or 0
                    bar.update(1)
                    bar.set_postfix_str(f"{items / max(1e-9, time.monotonic() - started):.2f} pairs/s")
                else:
                    pending.append(key)
            if not pending:
                break
    finally:
        bar.update(len(failed))
        bar.close()
    return failed


# ---- chunks -> checked pairs -> records ----

def chunk_records(records: list[dict]) -> list[dict]:
    """One record per chunk, the one whose output is the chunk's whole text."""
    seen = set()
    return [r for r in records if r.get("template") in CHUNK_TEMPLATES and not
            (r["chunk_id"] in seen or seen.add(r["chunk_id"]))]


def teacher_prompt(chunk: dict, per_chunk: int) -> str:
    kinds = "; ".join(f"{i + 1}. {QA_KINDS[i % len(QA_KINDS)]}" for i in range(per_chunk))
    return QA_TEACHER_PROMPT.format(title=chunk["title"], section=chunk["section"].split(" > ")[-1],
                                    text=chunk["output"], n=per_chunk, kinds=kinds)


def pair_record(chunk: dict, pair: dict, teacher: Teacher) -> dict:
    return {**{k: chunk[k] for k in PROVENANCE}, "instruction": pair["question"].strip(), "input": "",
            "output": pair["answer"].strip(), "template": f"qa:{teacher.label}:{QA_PROMPT_VERSION}"}


def checked_pairs(chunks: list[dict], replies: dict[str, str], teacher: Teacher) -> tuple[list[dict], list[dict]]:
    """(records of the pairs true to their chunk, rejects with their reason) from each chunk's reply
    (`replies`: chunk_id -> reply; a chunk without one is left out)."""
    accepted, rejects = [], []
    for chunk in chunks:
        if chunk["chunk_id"] not in replies:
            continue
        where = {"chunk_id": chunk["chunk_id"], "section": chunk["section"]}
        try:
            items = parse_pairs(replies[chunk["chunk_id"]])
        except ValueError as error:
            rejects.append({"reason": "malformed_reply", **where, "detail": str(error),
                            "reply": replies[chunk["chunk_id"]][:2000]})
            continue
        for item in items:
            if malformed_pair(item):
                rejects.append({"reason": "malformed_pair", **where, "detail": json.dumps(item)[:500]})
                continue
            why = rejection(item, chunk["output"])
            if why:
                rejects.append({"reason": why[0], **where, "question": item["question"], "answer": item["answer"],
                                "detail": why[1]})
            else:
                accepted.append(pair_record(chunk, item, teacher))
    kept = deduplicate(accepted)
    kept_ids = {id(r) for r in kept}
    rejects += [{"reason": "near_duplicate", "chunk_id": r["chunk_id"], "section": r["section"],
                 "question": r["instruction"], "answer": r["output"], "detail": ""}
                for r in accepted if id(r) not in kept_ids]
    return kept, rejects


def judged(records: list[dict], chunks: dict[str, dict], judge: Teacher, *, min_score: float, asking: Asking,
           cache_dir=None) -> tuple[list[dict], list[dict], dict]:
    """(records the judge scores at least `min_score`, rejects, failures): the judge sees each pair's chunk."""
    prompts = [QA_JUDGE_PROMPT.format(text=chunks[r["chunk_id"]]["output"], question=r["instruction"],
                                      answer=r["output"]) for r in records]
    keys = [reply_key(judge, prompt) for prompt in prompts]
    cache = ReplyCache(cache_file(judge, cache_dir))
    failed = ask_all(judge, dict(zip(keys, prompts)), cache, asking=asking, count=_counted(parse_score),
                     desc=f"Judge {judge.label}")
    kept, rejects = [], []
    for record, key in zip(records, keys):
        if key not in cache:
            continue  # no reply (counted in `failed`): left out this time, judged by the next run
        where = {"chunk_id": record["chunk_id"], "section": record["section"], "question": record["instruction"],
                 "answer": record["output"]}
        try:
            score = parse_score(cache.replies[key])
        except ValueError as error:
            rejects.append({"reason": "judge_unreadable", **where, "detail": str(error)[:300]})
            continue
        if score < min_score:
            rejects.append({"reason": "judge_score_low", **where, "detail": f"score {score:g} < {min_score:g}"})
        else:
            kept.append(record)
    return kept, rejects, failed


def rejects_file(dataset_dir) -> Path:
    dataset_dir = Path(dataset_dir)
    return dataset_dir.with_name(dataset_dir.name + REJECTS_SUFFIX)


def write_rejects(path, rejects: list[dict]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rejects), encoding="utf-8")
    return path


def summary(teacher: Teacher, *, chunks: int, replies: int, kept: int, rejects: list[dict], failed: dict,
            path) -> str:
    """What the teacher gave, in a few lines: pairs kept, rejected by reason, requests that failed."""
    reasons = Counter(r["reason"] for r in rejects)
    pairs = kept + sum(n for reason, n in reasons.items() if reason != "malformed_reply")
    lines = [f"Teacher {teacher.label} ({teacher.where}): {replies} of {chunks} chunks answered, {pairs} pairs, "
             f"{kept} kept; rejected: " + (", ".join(f"{reason} {n}" for reason, n in reasons.most_common())
                                           or "none") + f" (see {path})."]
    if failed:
        why = Counter(failed.values())
        lines.append(f"  {len(failed)} requests got no reply (" + ", ".join(f"{k} {n}" for k, n in why.items()) +
                     "): rerun 01 to ask them again (replies so far are cached); for timeouts raise QA_TIMEOUT or "
                     "lower QA_CONCURRENCY.")
    return "\n".join(lines)


def teacher_records(records: list[dict], s, *, cache_dir=None) -> list[dict]:
    """Step 01's teacher pass (settings `s`, QA_*): checked question/answer records for the chunks of `records`,
    with the chunk's provenance (so they follow its section in the split); [] when QA_TEACHER is empty. The rejects
    are written beside the dataset folder."""
    teacher = parse_teacher(s.qa_teacher)
    if teacher is None:
        return []
    asking = Asking.from_settings(s)
    chunks = chunk_records(records)
    prompts = {chunk["chunk_id"]: teacher_prompt(chunk, s.qa_per_chunk) for chunk in chunks}
    keys = {chunk_id: reply_key(teacher, prompt) for chunk_id, prompt in prompts.items()}
    cache = ReplyCache(cache_file(teacher, cache_dir))
    cached = sum(key in cache for key in keys.values())
    print(f"Teacher {teacher.label} ({teacher.where}): {len(chunks)} chunks, {cached} answered before "
          f"(cache {cache.path}), asking for {s.qa_per_chunk} pairs each of the other {len(chunks) - cached}.")
    failed = ask_all(teacher, {keys[c]: p for c, p in prompts.items()}, cache, asking=asking,
                     count=_counted(parse_pairs), desc=f"Teacher {teacher.label}",
                     about={keys[c]: {"chunk_id": c} for c in prompts})
    replies = {c: cache.replies[k] for c, k in keys.items() if k in cache}
    kept, rejects = checked_pairs(chunks, replies, teacher)
    judge = parse_teacher(s.qa_judge)
    if judge and kept:
        kept, judge_rejects, judge_failed = judged(kept, {c["chunk_id"]: c for c in chunks}, judge,
                                                   min_score=s.qa_judge_min_score, asking=asking, cache_dir=cache_dir)
        rejects += judge_rejects
        failed = {**failed, **{f"judge:{k}": v for k, v in judge_failed.items()}}
    path = write_rejects(rejects_file(s.dataset_dir), rejects)
    print(summary(teacher, chunks=len(chunks), replies=len(replies), kept=len(kept), rejects=rejects, failed=failed,
                  path=path))
    return kept
