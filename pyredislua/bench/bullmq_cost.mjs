// BullMQ's server cost per job (add + fetch + complete), for `pyredislua bench server`.
// usage: node bullmq_cost.mjs REDIS_URL JOBS
// Prints one JSON line: {version, jobs, sent: {command: count}, commandstats: "<INFO text>"}.
// Counts the commands BullMQ sends (its scripts run as EVALSHA; what they run inside is nested),
// between a CONFIG RESETSTAT after a warm-up (scripts loaded) and the last job's completion.
import { createRequire } from 'node:module';
import { Queue, Worker } from 'bullmq';
import IORedis from 'ioredis';

const require = createRequire(import.meta.url);
const [url, jobsArg] = process.argv.slice(2);
const jobs = Number(jobsArg);
const sent = {};
let counting = false;
const send = IORedis.prototype.sendCommand;
IORedis.prototype.sendCommand = function (command, stream) {
  if (counting) sent[command.name] = (sent[command.name] || 0) + 1;
  return send.call(this, command, stream);
};

const connection = { url, maxRetriesPerRequest: null };
const admin = new IORedis(url);
const queue = new Queue('bench', { connection });
let done = 0;
let wake = null;
const worker = new Worker('bench', async () => 1, { connection, concurrency: 8 });
worker.on('completed', () => { done += 1; if (wake && done >= wake.n) wake.resolve(); });
const until = (n) => new Promise((resolve) => { if (done >= n) resolve(); else wake = { n, resolve }; });

async function round(n) {
  const start = done;
  for (let i = 0; i < n; i += 100) {
    const adds = [];
    for (let j = i; j < Math.min(n, i + 100); j++) adds.push(queue.add('job', { i: j }));
    await Promise.all(adds);
  }
  await until(start + n);
}

await worker.waitUntilReady();
await round(50); // warm-up: scripts loaded, connections open
await admin.config('RESETSTAT');
counting = true;
await round(jobs);
counting = false;
const stats = await admin.info('commandstats');
const version = require('bullmq/package.json').version;
console.log(JSON.stringify({ version, jobs, sent, commandstats: stats }));
await worker.close(true);
await queue.close();
admin.disconnect();
process.exit(0);
