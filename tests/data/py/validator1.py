"""UserLand's validator1 suite, driven by Python's stock xmlrpc.client.

Usage: validator1.py URL SEED...

For each seed, one round: every one of the eight methods is called with
inputs drawn from random.Random(seed), as the original validator did, and
its answer is checked against the answer computed here. The date and the
bytes of manyTypesTest, and those nested in the struct that echoStructTest
sends, must come back as datetime and bytes (use_builtin_types=True), not
as their text. Prints "ROUND seed: ok" per round; the first wrong answer
raises, naming the seed and the method.
"""
import datetime
import random
import string
import sys
import xmlrpc.client

TEXT = string.ascii_letters + string.digits + " <>&'\"\u00e9\u263a"


def text(rng, n):
    return "".join(rng.choice(TEXT) for _ in range(rng.randint(0, n)))


def stooges(rng):
    return {k: rng.randint(-1000, 1000) for k in ("moe", "larry", "curly")}


def when(rng):
    return datetime.datetime(rng.randint(1, 9999), rng.randint(1, 12), rng.randint(1, 28),
                             rng.randint(0, 23), rng.randint(0, 59), rng.randint(0, 59))


def blob(rng):
    return bytes(rng.randrange(256) for _ in range(rng.randint(0, 200)))


def int32(rng):
    return rng.randint(-2**31, 2**31 - 1)


def check(seed, method, got, want):
    if got != want or type(got) is not type(want):
        raise AssertionError(f"seed {seed}: {method} answered {got!r}, expected {want!r}")


def round_(v, seed):
    rng = random.Random(seed)

    structs = [stooges(rng) for _ in range(rng.randint(1, 10))]
    check(seed, "arrayOfStructsTest", v.arrayOfStructsTest(structs), sum(s["curly"] for s in structs))

    s = text(rng, 60)
    counts = {"ctLeftAngleBrackets": s.count("<"), "ctRightAngleBrackets": s.count(">"),
              "ctAmpersands": s.count("&"), "ctApostrophes": s.count("'"), "ctQuotes": s.count('"')}
    check(seed, "countTheEntities", v.countTheEntities(s), counts)

    st = stooges(rng)
    check(seed, "easyStructTest", v.easyStructTest(st), st["moe"] + st["larry"] + st["curly"])

    nested = {
        "n": int32(rng), "s": text(rng, 20), "f": rng.uniform(-1e6, 1e6), "none": None,
        "substruct": {"when": when(rng), "blob": blob(rng),
                      "list": [when(rng), blob(rng), rng.random() < 0.5, [], {}]},
    }
    check(seed, "echoStructTest", v.echoStructTest(nested), nested)

    many = [int32(rng), rng.random() < 0.5, text(rng, 40), rng.uniform(-1e9, 1e9) * 10 ** rng.randint(-30, 30),
            when(rng), blob(rng)]
    got = v.manyTypesTest(*many)
    check(seed, "manyTypesTest", got, many)
    if not (isinstance(got[4], datetime.datetime) and isinstance(got[5], bytes)):
        raise AssertionError(f"seed {seed}: manyTypesTest flattened its date or bytes: {got!r}")

    strings = [text(rng, 10) for _ in range(rng.randint(100, 200))]
    check(seed, "moderateSizeArrayCheck", v.moderateSizeArrayCheck(strings), strings[0] + strings[-1])

    calendar = {}
    for year in ("1999", "2000", "2001"):
        calendar[year] = {}
        for month in ("%02d" % m for m in range(1, 13)):
            days = {"01"} | {"%02d" % rng.randint(1, 28) for _ in range(rng.randint(0, 3))}
            calendar[year][month] = {day: stooges(rng) for day in sorted(days)}
    day = calendar["2000"]["04"]["01"]
    check(seed, "nestedStructTest", v.nestedStructTest(calendar), day["moe"] + day["larry"] + day["curly"])

    n = int32(rng)
    check(seed, "simpleStructReturnTest", v.simpleStructReturnTest(n),
          {"times10": n * 10, "times100": n * 100, "times1000": n * 1000})
    print(f"ROUND {seed}: ok")


def main():
    proxy = xmlrpc.client.ServerProxy(sys.argv[1], use_builtin_types=True, allow_none=True)
    for seed in sys.argv[2:]:
        round_(proxy.validator1, int(seed))


main()
