// The README's Node.js recipe for a Redis Cluster (ioredis): load the library on every primary,
// then FCALL; a primary that lost it ("Function not found": FUNCTION FLUSH, a new primary, a
// promoted replica that never had it) is loaded again and the call retried.
// usage: node cluster_recipe.mjs HOST PORT TAG FLUSH_PORT  (prints one JSON line)
import { execFileSync } from "node:child_process";
import Redis from "ioredis";

const [host, port, tag, flushPort] = process.argv.slice(2);

// --- the recipe ---------------------------------------------------------------------------
const code = execFileSync("pyredislua", ["render"], { encoding: "utf8" });
const cluster = new Redis.Cluster([{ host, port: Number(port) }]);

async function loadEverywhere() {
  // FUNCTION LOAD REPLACE replaces whatever a primary holds; `pyredislua load --url` is the
  // version-aware way (never downgrades).
  await Promise.all(cluster.nodes("master").map(
    (node) => node.call("FUNCTION", "LOAD", "REPLACE", code)));
}

async function fcall(fn, keys, ...args) {
  try {
    return await cluster.call("FCALL", fn, keys.length, ...keys, ...args);
  } catch (error) {
    if (!String(error.message).includes("Function not found")) throw error;
    await loadEverywhere();
    return await cluster.call("FCALL", fn, keys.length, ...keys, ...args);
  }
}

await loadEverywhere();
const lock = [`prl:lock:{${tag}}`, `prl:lock:{${tag}}:fence`, `prl:lock:{${tag}}:signal`,
              `prl:lock:{${tag}}:waiters`];
const acquired = await fcall("pyredislua_v1_lock_acquire", lock, "node-1", 30000);
const released = await fcall("pyredislua_v1_lock_release", lock, "node-1");
// --- end of the recipe ---------------------------------------------------------------------

const admin = new Redis({ host, port: Number(flushPort) });
await admin.call("FUNCTION", "FLUSH");
admin.disconnect();
const afterFlush = await fcall("pyredislua_v1_lock_acquire", lock, "node-2", 30000);
console.log(JSON.stringify({ acquired, released, after_flush: afterFlush }));
cluster.disconnect();
