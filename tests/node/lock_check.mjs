// A lock client in Node.js (ioredis), written from README.md ("From redis-cli (or any
// client)") and docs/reference.md only: acquire, wait on the signal list for a grant, hold,
// release with the owner token -- the popped grant, and no other argument.
//
//   node lock_check.mjs <redis url> <name> <holds> <ttl ms> <register ms> [<turn ms>]
//
// With <turn ms> ("Looping in turns"), the process loops with one token: each release passes
// its token and turn_ms, a carried lock (reply 3) is taken again by the next acquire with the
// same token, and a carry left at the end is passed on with the token carry:<token>.
//
// Does <holds> holds of the lock, each a non-atomic read-modify-write of a shared counter, and
// prints one JSON line per hold: {fence, start, end} (process.hrtime, CLOCK_MONOTONIC: ns,
// comparable across processes) where end is when it released or its lease (counted from the
// send time of the call that registered it, for a grant) ran out, whichever came first.
import Redis from "ioredis";
import { randomBytes } from "node:crypto";

const [url, name, holdsArg, ttlArg, registerArg, turnArg] = process.argv.slice(2);
const holds = Number(holdsArg), ttl = Number(ttlArg), register = Number(registerArg);
const turn = Number(turnArg ?? 0);
const K = `prl:lock:{${name}}`;
const KEYS = [K, `${K}:fence`, `${K}:signal`, `${K}:waiters`];
const COUNTER = `${K}:counter-of-the-check`;
const redis = new Redis(url);
const now = () => process.hrtime.bigint();

async function acquire(token) {
  for (;;) {
    const sent = now(); // S: the lease of a grant is counted from here
    const reply = await redis.call("FCALL", "pyredislua_v1_lock_acquire", 4, ...KEYS, token, ttl,
                                   register);
    if (reply[0] === 1) return { owner: token, fence: reply[1], until: sent + BigInt(ttl) * 1000000n };
    const pttl = reply[1];
    // block no longer than until the lease runs out, nor than we are registered (less margin)
    const block = Math.max(1, Math.min(pttl + 1, register - 250));
    const popped = await redis.blpop(KEYS[2], block / 1000);
    if (popped) {
      const grant = popped[1];
      const [, fence, lease] = grant.split(":");
      return { owner: grant, fence: Number(fence), until: sent + BigInt(lease) * 1000000n };
    }
  }
}

const loopToken = randomBytes(16).toString("hex");
let carried = false;
for (let i = 0; i < holds; i++) {
  const token = turn ? loopToken : randomBytes(16).toString("hex");
  const fromCarry = carried;
  const hold = await acquire(token);
  const start = now();
  const value = Number((await redis.get(COUNTER)) ?? 0); // deliberately not atomic
  await redis.set(COUNTER, value + 1);
  const released = now();
  // with turns: token ttl_ms handoff_ms waiter requeue_ms turn_ms (the waiter is our own token)
  const args = turn ? [hold.owner, ttl, 100, token, 0, turn] : [hold.owner];
  const reply = await redis.call("FCALL", "pyredislua_v1_lock_release", 4, ...KEYS, ...args);
  carried = reply === 3;
  const end = released < hold.until ? released : hold.until;
  console.log(JSON.stringify({ fence: hold.fence, start: start.toString(), end: end.toString(),
                               released: reply, grant: hold.owner.startsWith("grant:"),
                               carried: fromCarry }));
}
if (carried) {
  // not acquiring again: pass the carry on (granted to the longest-blocked waiter, or freed)
  await redis.call("FCALL", "pyredislua_v1_lock_release", 4, ...KEYS, `carry:${loopToken}`, ttl,
                   100, loopToken);
}
await redis.quit();
