#!/usr/bin/env python3
"""Checks a running `trustmoe serve` over HTTP with the standard library only.

    serve_client.py PORT MODEL EXPECTED_GREEDY_TEXT   full API checks (brown-moe)
    serve_client.py PORT MODEL --capacity               429 past --max-seqs 1 --max-queue 0
    serve_client.py PORT MODEL --greedy PROMPT N        prints the greedy completion of PROMPT

Prints "ok ..." / "FAIL ..." lines and "N passed, N failed"; exits 1 on any failure.
"""
import http.client
import json
import sys
import threading

PORT = int(sys.argv[1])
MODEL = sys.argv[2]
passed = failed = 0


def check(name, cond, detail=""):
    global passed, failed
    if cond:
        passed += 1
        print("ok   " + name)
    else:
        failed += 1
        print("FAIL " + name + (": " + str(detail)[:400] if detail else ""))


def request(method, path, body=None, raw=None):
    c = http.client.HTTPConnection("127.0.0.1", PORT, timeout=120)
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    c.request(method, path, body=data, headers={"Content-Type": "application/json"})
    r = c.getresponse()
    text = r.read()
    c.close()
    return r.status, text


def post(path, body=None, raw=None):
    st, text = request("POST", path, body, raw)
    try:
        return st, json.loads(text)
    except ValueError:
        return st, text


def stream(path, body, kill_pid=0):
    """The SSE events of a streaming request, as parsed JSON (and "[DONE]");
    with kill_pid, SIGTERM goes to that process after the first event."""
    c = http.client.HTTPConnection("127.0.0.1", PORT, timeout=120)
    c.request("POST", path, body=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    r = c.getresponse()
    events = []
    buf = b""
    while True:
        chunk = r.read1(65536) if hasattr(r, "read1") else r.read(1)
        if not chunk:
            break
        buf += chunk
        while b"\n\n" in buf:
            ev, buf = buf.split(b"\n\n", 1)
            line = ev.decode()
            if line.startswith("data: "):
                d = line[6:]
                events.append(d if d == "[DONE]" else json.loads(d))
                if kill_pid:
                    import os
                    import signal
                    os.kill(kill_pid, signal.SIGTERM)
                    kill_pid = 0
    c.close()
    return r.status, r.getheader("Content-Type"), events


def metric(name):
    st, text = request("GET", "/metrics")
    for line in text.decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


def completion(prompt, n, **kw):
    body = {"model": MODEL, "prompt": prompt, "max_tokens": n, "temperature": 0}
    body.update(kw)
    return post("/v1/completions", body)


def error_case(name, status, want_status, js, param=None):
    ok = status == want_status and isinstance(js, dict) and "error" in js and js["error"].get("message")
    if param is not None:
        ok = ok and js["error"].get("param") == param
    check(f"{name}: {want_status}" + (f" naming '{param}'" if param else ""), ok, (status, js))


def full(expected):
    st, text = request("GET", "/health")
    check("GET /health", st == 200 and json.loads(text) == {"status": "ok"}, (st, text))
    st, text = request("GET", "/v1/models")
    models = json.loads(text)
    check("GET /v1/models lists the folder's model", st == 200 and models["data"][0]["id"] == MODEL, text)
    st, text = request("GET", "/")
    check("GET / is the chat page", st == 200 and b"<title>trustmoe</title>" in text and b"/v1/chat/completions" in text)

    st, js = completion("The jury said", 12)
    got = js["choices"][0]["text"] if st == 200 else None
    check("completion equals `generate` greedy", got == expected, (st, got, expected))
    check("finish_reason length", st == 200 and js["choices"][0]["finish_reason"] == "length", js)
    st_t, tk = post("/tokenize", {"prompt": "The jury said"})
    check("usage counts", st == 200 and js["usage"] == {"prompt_tokens": tk["count"], "completion_tokens": 12,
                                                         "total_tokens": tk["count"] + 12}, (js.get("usage"), tk))
    st_d, dt = post("/detokenize", {"tokens": tk["tokens"]})
    check("tokenize / detokenize round trip", st_t == 200 and st_d == 200 and dt["prompt"] == "The jury said", dt)

    st, ctype, evs = stream("/v1/completions", {"model": MODEL, "prompt": "The jury said", "max_tokens": 12,
                                                "temperature": 0, "stream": True,
                                                "stream_options": {"include_usage": True}})
    text = "".join(e["choices"][0]["text"] for e in evs if e != "[DONE]" and e["choices"])
    check("stream: SSE content type", st == 200 and ctype.startswith("text/event-stream"), ctype)
    check("stream: deltas add up to the completion", text == expected, (text, expected))
    check("stream: ends with [DONE]", evs and evs[-1] == "[DONE]", evs[-2:])
    finals = [e for e in evs if e != "[DONE]" and e["choices"] and e["choices"][0]["finish_reason"]]
    check("stream: one final chunk with finish_reason", len(finals) == 1 and finals[0]["choices"][0]["finish_reason"] == "length")
    usage = [e for e in evs if e != "[DONE]" and e.get("usage")]
    check("stream: usage chunk", len(usage) == 1 and usage[0]["usage"]["completion_tokens"] == 12, usage)

    # a stop string inside the greedy text cuts it there
    cut = expected.find("not")
    if cut > 0:
        st, js = completion("The jury said", 12, stop=["not"])
        check("stop string: text cut before it, finish_reason stop",
              st == 200 and js["choices"][0]["text"] == expected[:cut] and js["choices"][0]["finish_reason"] == "stop", js)
        st, ctype, evs = stream("/v1/completions", {"model": MODEL, "prompt": "The jury said", "max_tokens": 12,
                                                    "temperature": 0, "stream": True, "stop": "not"})
        text = "".join(e["choices"][0]["text"] for e in evs if e != "[DONE]")
        check("stop string while streaming: nothing after it is sent", text == expected[:cut], (text, expected[:cut]))

    st, js = completion("The jury said", 6, logprobs=3)
    lp = js["choices"][0]["logprobs"] if st == 200 else None
    ok = lp and len(lp["tokens"]) == 6 and all(len(t) <= 3 for t in lp["top_logprobs"])
    ok = ok and all(x <= 1e-6 for x in lp["token_logprobs"])
    # greedy: the chosen token is the most likely one
    ok = ok and all(abs(max(t.values()) - x) < 1e-4 for t, x in zip(lp["top_logprobs"], lp["token_logprobs"]))
    check("logprobs: 6 tokens, top 3 each, greedy takes the top", ok, lp)

    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Tell me about the jury."}]
    st, js = post("/v1/chat/completions", {"model": MODEL, "messages": msgs, "max_tokens": 10, "temperature": 0})
    chat = js["choices"][0]["message"]["content"] if st == 200 else None
    check("chat completion", st == 200 and js["object"] == "chat.completion" and
          js["choices"][0]["message"]["role"] == "assistant" and chat is not None, js)
    st, ctype, evs = stream("/v1/chat/completions", {"model": MODEL, "messages": msgs, "max_tokens": 10,
                                                     "temperature": 0, "stream": True})
    text = "".join(e["choices"][0]["delta"].get("content", "") for e in evs if e != "[DONE]")
    check("chat stream: role first, deltas add up", evs and evs[0]["choices"][0]["delta"].get("role") == "assistant"
          and text == chat, (text, chat))

    # 16 concurrent streaming clients join the batch; each gets its solo answer
    prompts = ["The jury said", "It was the", "In the morning", "She had never", "They went to the", "A new",
               "The city of", "He looked at", "When the war", "Most of the", "There is no", "We have been",
               "After the meeting", "The old man", "This is a", "On the other hand"]
    alone = {p: completion(p, 10)[1]["choices"][0]["text"] for p in prompts}
    together = {}

    def one(p):
        st, ctype, evs = stream("/v1/completions", {"model": MODEL, "prompt": p, "max_tokens": 10, "temperature": 0,
                                                    "stream": True})
        together[p] = "".join(e["choices"][0]["text"] for e in evs if e != "[DONE]")
    ts = [threading.Thread(target=one, args=(p,)) for p in prompts]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    check("16 concurrent streams equal their solo answers", together == alone,
          {p: (together.get(p), alone[p]) for p in prompts if together.get(p) != alone[p]})

    # expert selection per request
    st, js = completion("The jury said", 12, trustmoe={"select": "router"})
    check("trustmoe.select router: the model's routing", st == 200 and js["choices"][0]["text"] == expected, js)
    st, js = completion("The jury said", 12, trustmoe={"select": "blend", "alpha": 1.0})
    check("blend with alpha 1: the router's choice", st == 200 and js["choices"][0]["text"] == expected, js)
    st, js = completion("The jury said", 12, trustmoe={"select": "blend", "alpha": 0.0})
    check("blend with alpha 0 (prior trust only): other experts, other text",
          st == 200 and js["choices"][0]["text"] != expected, js)
    st, js = completion("The jury said", 4, trustmoe={"select": "best"})
    error_case("unknown selection", st, 400, js, "trustmoe.select")
    st, js = completion("The jury said", 4, trustmoe={"select": "blend", "alpha": 2})
    error_case("alpha out of range", st, 400, js, "trustmoe.alpha")

    # penalties and min_p reach the sampler: a long greedy text that repeats
    # itself changes under a frequency penalty
    st, plain = completion("The jury said", 40)
    st2, pen = completion("The jury said", 40, frequency_penalty=2.0, presence_penalty=1.0)
    check("frequency/presence penalties change a repetitive greedy text",
          st == 200 and st2 == 200 and pen["choices"][0]["text"] != plain["choices"][0]["text"], (plain, pen))
    st, js = completion("The jury said", 8, temperature=1.0, min_p=0.99, seed=3)
    st2, js2 = completion("The jury said", 8)
    check("min_p 0.99 leaves only the top token: the greedy text",
          st == 200 and js["choices"][0]["text"] == js2["choices"][0]["text"], (js, js2))
    st, js = completion("x", 4, presence_penalty=5)
    error_case("presence_penalty out of range", st, 400, js, "presence_penalty")

    # seeded sampling repeats
    a = completion("The jury said", 10, temperature=0.9, seed=7)[1]["choices"][0]["text"]
    b = completion("The jury said", 10, temperature=0.9, seed=7)[1]["choices"][0]["text"]
    check("same seed, same sample", a == b, (a, b))

    # bad input: a 4xx naming the field, and the server keeps serving
    st, js = post("/v1/completions", raw=b'{"prompt": "x", ')
    error_case("invalid JSON", st, 400, js)
    st, js = completion("x", 4, temperature="hot")
    error_case("wrong type", st, 400, js, "temperature")
    st, js = completion("x", 4, top_p=3)
    error_case("out of range", st, 400, js, "top_p")
    st, js = post("/v1/completions", {"model": "gpt-4", "prompt": "x"})
    error_case("unknown model", st, 404, js, "model")
    st, js = completion("The jury said", 100000)
    error_case("prompt + max_tokens over the context", st, 400, js, "max_tokens")
    st, js = post("/v1/chat/completions", {"model": MODEL, "messages": []})
    error_case("empty messages", st, 400, js, "messages")
    st, js = post("/v1/chat/completions", {"model": MODEL, "messages": [{"role": "robot", "content": "x"}]})
    error_case("bad role", st, 400, js, "messages[0].role")
    st, js = post("/v1/completions", raw=b'{"prompt": "bad \xff\xfe bytes", "max_tokens": 2}')
    error_case("invalid UTF-8", st, 400, js, "prompt")
    st, js = post("/v1/completions", raw=b'{"prompt": "' + b"a" * 70000 + b'"}')
    error_case("body over the cap", st, 413, js)
    st, js = post("/v1/completions", {"model": MODEL, "prompt": "x", "n": 2})
    error_case("n other than 1", st, 400, js, "n")
    st, js = post("/v1/completions", {"model": MODEL})
    error_case("missing prompt", st, 400, js, "prompt")
    st, js = post("/v1/completions", {"model": MODEL, "prompt": [1, 2, 10 ** 9]})
    error_case("token id outside the vocabulary", st, 400, js, "prompt")
    st, text = request("GET", "/v1/nothing")
    error_case("unknown endpoint", st, 404, json.loads(text))
    st, text = request("GET", "/v1/completions")
    error_case("wrong method", st, 405, json.loads(text))
    # a client that leaves mid-stream: its sequence is cancelled
    c = http.client.HTTPConnection("127.0.0.1", PORT, timeout=60)
    c.request("POST", "/v1/completions", body=json.dumps({"prompt": "The jury said", "max_tokens": 400,
                                                          "stream": True}).encode())
    r = c.getresponse()
    r.read1(100) if hasattr(r, "read1") else r.read(1)
    running_during = metric("trustmoe_sequences_running")
    c.close()
    import time
    for _ in range(100):
        if metric("trustmoe_sequences_running") == 0:
            break
        time.sleep(0.1)
    check("a dropped stream is cancelled: running sequences 1 -> 0",
          running_during == 1 and metric("trustmoe_sequences_running") == 0, (running_during,))
    st, js = completion("The jury said", 12)
    check("still serving after bad input and a dropped stream", st == 200 and js["choices"][0]["text"] == expected, js)

    st, text = request("GET", "/metrics")
    m = text.decode()
    ok = st == 200 and 'trustmoe_requests_total{endpoint="completions",status="4xx"}' in m
    ok = ok and "trustmoe_time_to_first_token_seconds_bucket" in m and "trustmoe_inter_token_latency_seconds_count" in m
    ok = ok and 'trustmoe_expert_tokens_total{layer="0",expert="0"}' in m and "trustmoe_sequences_running" in m
    ok = ok and 'trustmoe_exchange_seconds_total{phase="local"}' in m
    check("GET /metrics: requests, latency histograms, expert load, exchange time", ok, m[:600])
    gen = [l for l in m.splitlines() if l.startswith("trustmoe_generation_tokens_total ")]
    check("metrics count the tokens generated", gen and int(gen[0].split()[1]) >= 12 * 8, gen)


def capacity():
    """--max-seqs 1 --max-queue 0: a second request while one runs gets 429."""
    c = http.client.HTTPConnection("127.0.0.1", PORT, timeout=120)
    c.request("POST", "/v1/completions", body=json.dumps({"prompt": "The jury said", "max_tokens": 300,
                                                          "stream": True, "temperature": 0}).encode())
    r = c.getresponse()
    first = r.read1(10) if hasattr(r, "read1") else r.read(10)  # the first token is out: it runs
    st, js = completion("The jury said", 4)
    check("429 past the queue bound", st == 429 and js["error"]["type"] == "rate_limit_error", (st, js))
    c.close()


if len(sys.argv) > 3 and sys.argv[3] == "--wait-running":
    # waits (up to 60 s) until a sequence is running
    import time
    for _ in range(600):
        if (metric("trustmoe_sequences_running") or 0) >= 1:
            sys.exit(0)
        time.sleep(0.1)
    sys.exit(1)
elif len(sys.argv) > 3 and sys.argv[3] == "--stream":
    # --stream PROMPT N [PID]: a streamed completion; with PID, SIGTERM goes to PID once the
    # first token is in; prints the status, finish reason, token count and whether [DONE] came
    kill_pid = int(sys.argv[6]) if len(sys.argv) > 6 else 0
    st, ctype, evs = stream("/v1/completions", {"model": MODEL, "prompt": sys.argv[4], "max_tokens": int(sys.argv[5]),
                                                "temperature": 0, "stream": True,
                                                "stream_options": {"include_usage": True}}, kill_pid)
    fin = [e["choices"][0]["finish_reason"] for e in evs if e != "[DONE]" and e["choices"] and
           e["choices"][0]["finish_reason"]]
    usage = [e["usage"]["completion_tokens"] for e in evs if e != "[DONE]" and e.get("usage")]
    print(st, fin[0] if fin else None, usage[0] if usage else None, "DONE" if evs and evs[-1] == "[DONE]" else "-")
    sys.exit(0)
elif len(sys.argv) > 3 and sys.argv[3] == "--capacity":
    capacity()
elif len(sys.argv) > 3 and sys.argv[3] == "--greedy":
    st, js = completion(sys.argv[4], int(sys.argv[5]))
    print(js["choices"][0]["text"] if st == 200 else f"HTTP {st}: {js}")
    sys.exit(0 if st == 200 else 1)
else:
    full(sys.argv[3])
print(f"{passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
