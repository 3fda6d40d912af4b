// The basic Azure Batch flow through the official @azure/batch client, unchanged, against a live server.
// Env: BATCH_ENDPOINT, BATCH_ACCOUNT, BATCH_KEY, RUN_ID. Prints one JSON object of what the SDK returned
// (the pytest side asserts on it) and exits non-zero on the first failed expectation.
"use strict";

const assert = require("node:assert/strict");
const crypto = require("node:crypto");
const http = require("node:http");

// Remember the Authorization header of the last request the client put on the wire.
let lastAuthorization = null;
const originalRequest = http.request;
http.request = function (...args) {
  for (const a of args) {
    if (a && typeof a === "object" && a.headers) {
      for (const [k, v] of Object.entries(a.headers)) {
        if (k.toLowerCase() === "authorization") lastAuthorization = Array.isArray(v) ? v[0] : v;
      }
    }
  }
  return originalRequest.apply(this, args);
};
const { BatchServiceClient, BatchSharedKeyCredentials } = require("@azure/batch");

const endpoint = process.env.BATCH_ENDPOINT;
const account = process.env.BATCH_ACCOUNT;
const key = process.env.BATCH_KEY;
const run = process.env.RUN_ID || "js";
const poolId = `jspool-${run}`;
const jobId = `jsjob-${run}`;
const out = { steps: [] };

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function waitFor(what, fn, timeoutMs = 60000) {
  const deadline = Date.now() + timeoutMs;
  let last;
  while (Date.now() < deadline) {
    last = await fn();
    if (last) return last;
    await sleep(100);
  }
  throw new Error(`timed out waiting for ${what} (last: ${JSON.stringify(last)})`);
}

async function listAll(first, next) {
  const items = [];
  let page = await first();
  let pages = 1;
  items.push(...page);
  while (page.odatanextLink) {
    page = await next(page.odatanextLink);
    items.push(...page);
    pages += 1;
  }
  return { items, pages };
}

async function streamText(res) {
  const chunks = [];
  for await (const c of res.readableStreamBody) chunks.push(Buffer.from(c));
  return Buffer.concat(chunks).toString("utf8");
}

async function step(name, fn) {
  const value = await fn();
  out.steps.push(name);
  return value;
}

async function main() {
  const client = new BatchServiceClient(new BatchSharedKeyCredentials(account, key), endpoint);
  out.apiVersion = client.apiVersion;

  await step("pool.add", () =>
    client.pool.add({
      id: poolId,
      vmSize: "standard_d2s_v3",
      virtualMachineConfiguration: {
        imageReference: { publisher: "canonical", offer: "0001-com-ubuntu-server-jammy", sku: "22_04-lts" },
        nodeAgentSKUId: "batch.node.ubuntu 22.04",
      },
      targetDedicatedNodes: 1,
      taskSlotsPerNode: 2,
    }),
  );
  const pool = await step("pool.get", () => client.pool.get(poolId));
  out.pool = { id: pool.id, vmSize: pool.vmSize, taskSlotsPerNode: pool.taskSlotsPerNode, etag: !!pool.eTag };
  out.poolExists = await step("pool.exists", () => client.pool.exists(poolId));

  const nodes = await step("node idle", () =>
    waitFor("an idle node", async () => {
      const page = await client.computeNode.list(poolId);
      return page.length === 1 && page[0].state === "idle" ? page : null;
    }),
  );
  out.node = { state: nodes[0].state, isDedicated: nodes[0].isDedicated };

  await step("job.add", () =>
    client.job.add({ id: jobId, poolInfo: { poolId }, usesTaskDependencies: true, priority: 10 }),
  );
  const job = await step("job.get", () => client.job.get(jobId));
  out.job = { state: job.state, priority: job.priority, usesTaskDependencies: job.usesTaskDependencies };

  // ETag conditions: a stale If-Match is refused with 412, a current one is accepted
  const etag = job.eTag;
  await step("job.patch if-match", () =>
    client.job.patch(jobId, { priority: 20 }, { jobPatchOptions: { ifMatch: etag } }),
  );
  try {
    await client.job.patch(jobId, { priority: 30 }, { jobPatchOptions: { ifMatch: etag } });
    out.staleIfMatch = "accepted";
  } catch (e) {
    out.staleIfMatch = { status: e.statusCode, code: e.code };
  }
  out.priorityAfterPatch = (await client.job.get(jobId)).priority;

  await step("task.add", () =>
    client.task.add(jobId, { id: "hello", commandLine: "/bin/sh -c 'echo hello from $AZ_BATCH_TASK_ID'" }),
  );
  // more than 100 tasks: the JS client refuses >100 per addCollection (MaxItems), so chunk as users must
  const many = Array.from({ length: 150 }, (_, i) => ({ id: `t${String(i).padStart(3, "0")}`, commandLine: "/bin/true" }));
  try {
    await client.task.addCollection(jobId, many);
    out.over100 = "accepted";
  } catch (e) {
    out.over100 = { message: String(e.message).slice(0, 200) };
  }
  const added = [];
  for (let i = 0; i < many.length; i += 100) {
    const res = await client.task.addCollection(jobId, many.slice(i, i + 100));
    added.push(...res.value.map((r) => r.status));
  }
  out.addedStatuses = [...new Set(added)];
  out.addedCount = added.length;
  await step("dependencies", async () => {
    await client.task.add(jobId, { id: "1", commandLine: "/bin/true" });
    await client.task.add(jobId, {
      id: "child",
      commandLine: "/bin/sh -c 'echo child'",
      dependsOn: { taskIds: ["hello"], taskIdRanges: [{ start: 1, end: 1 }] },
    });
  });

  const done = await step("tasks complete", () =>
    waitFor("all tasks completed", async () => {
      const c = await client.job.getTaskCounts(jobId);
      return c.taskCounts.completed === 153 ? c : null;
    }),
  );
  out.taskCounts = done.taskCounts;
  out.taskSlotCounts = done.taskSlotCounts;

  const hello = await client.task.get(jobId, "hello");
  out.hello = { state: hello.state, exitCode: hello.executionInfo.exitCode, result: hello.executionInfo.result };

  const file = await step("file.getFromTask", () => client.file.getFromTask(jobId, "hello", "stdout.txt"));
  out.stdout = await streamText(file);
  const part = await step("file range", () =>
    client.file.getFromTask(jobId, "hello", "stdout.txt", { fileGetFromTaskOptions: { ocpRange: "bytes=0-4" } }),
  );
  out.stdoutRange = await streamText(part);
  const props = await client.file.getPropertiesFromTask(jobId, "hello", "stdout.txt");
  out.fileProps = { contentLength: Number(props.contentLength), isDirectory: props.ocpBatchFileIsdirectory };
  const files = await client.file.listFromTask(jobId, "hello");
  out.taskFiles = files.map((f) => f.name).sort();

  // $filter, $select and paging (maxResults 40 over 152 tasks: 4 pages through odata.nextLink)
  const filtered = await client.task.list(jobId, {
    taskListOptions: { filter: "startswith(id,'t1')", select: "id,state" },
  });
  out.filtered = { count: filtered.length, keys: Object.keys(filtered[0]).sort() };
  const paged = await listAll(
    () => client.task.list(jobId, { taskListOptions: { maxResults: 40 } }),
    (link) => client.task.listNext(link),
  );
  out.paged = { count: paged.items.length, pages: paged.pages };

  // terminate and reactivate
  await client.task.add(jobId, { id: "sleeper", commandLine: "/bin/sleep 60" });
  await waitFor("sleeper running", async () => (await client.task.get(jobId, "sleeper")).state === "running");
  await step("task.terminate", () => client.task.terminate(jobId, "sleeper"));
  const term = await client.task.get(jobId, "sleeper");
  out.terminated = { state: term.state, failure: term.executionInfo.failureInfo && term.executionInfo.failureInfo.code };
  await step("task.reactivate", () => client.task.reactivate(jobId, "sleeper"));
  out.reactivatedState = (await client.task.get(jobId, "sleeper")).state;
  await client.task.terminate(jobId, "sleeper");

  // job disable / enable / update (PUT)
  await step("job.disable", () => client.job.disable(jobId, "requeue"));
  out.disabledState = await waitFor("job disabled", async () => {
    const s = (await client.job.get(jobId)).state;
    return s === "disabled" ? s : null;
  });
  await step("job.enable", () => client.job.enable(jobId));
  await step("job.update", () => client.job.update(jobId, { poolInfo: { poolId }, priority: 5 }));
  out.afterUpdate = (await client.job.get(jobId)).priority;

  // resize
  await step("pool.resize", () => client.pool.resize(poolId, { targetDedicatedNodes: 2 }));
  out.resized = await waitFor("2 idle nodes", async () => {
    const page = await client.computeNode.list(poolId);
    return page.length === 2 && page.every((n) => n.state === "idle") ? page.length : null;
  });

  // account-wide lifetime statistics (only in the api-versions this client speaks)
  const stats = await step("job.getAllLifetimeStatistics", () => client.job.getAllLifetimeStatistics());
  out.lifetimeJobStats = {
    numSucceededTasks: stats.numSucceededTasks,
    numFailedTasks: stats.numFailedTasks,
    hasUrl: typeof stats.url === "string" && stats.url.endsWith("/lifetimejobstats"),
    wallClockTime: stats.wallClockTime,
  };

  const poolStats = await step("pool.getAllLifetimeStatistics", () => client.pool.getAllLifetimeStatistics());
  out.lifetimePoolStats = {
    hasUrl: typeof poolStats.url === "string" && poolStats.url.endsWith("/lifetimepoolstats"),
    startTime: poolStats.startTime instanceof Date,
    dedicatedCoreTime: poolStats.usageStats && poolStats.usageStats.dedicatedCoreTime,
    avgCPUPercentage: poolStats.resourceStats && poolStats.resourceStats.avgCPUPercentage,
    peakMemoryGiB: poolStats.resourceStats && poolStats.resourceStats.peakMemoryGiB,
    diskReadIOps: poolStats.resourceStats && poolStats.resourceStats.diskReadIOps,
  };
  const usage = await step("pool.listUsageMetrics", () => client.pool.listUsageMetrics());
  out.usageMetrics = { isArray: Array.isArray(usage), length: usage.length };

  // a wrong key: 403 AuthenticationFailed, with the string the server signed for this client's request
  // a wrong key: 403 AuthenticationFailed whose detail is the exact string this client signed, so the
  // HMAC of that string with the (wrong) key the client used equals the signature it sent
  const wrongKey = Buffer.from("wrong-key").toString("base64");
  const bad = new BatchServiceClient(new BatchSharedKeyCredentials(account, wrongKey), endpoint);
  out.badKey = {};
  for (const [name, call] of [
    ["DELETE", () => bad.job.deleteMethod(jobId)],
    ["GET", () => bad.task.list(jobId, { taskListOptions: { filter: "state eq 'completed'" } })],
    ["PATCH", () => bad.job.patch(jobId, { priority: 1 })],
    ["POST", () => bad.job.enable(jobId)],
  ]) {
    try {
      await call();
      out.badKey[name] = "accepted";
    } catch (e) {
      const detail = (e.body && e.body.values ? e.body.values : []).find((v) => v.key === "AuthenticationErrorDetail");
      const m = detail ? /string to sign: '([\s\S]*)'\.$/.exec(detail.value) : null;
      const sent = String(lastAuthorization).split(":").pop();
      const recomputed = m ? crypto.createHmac("sha256", Buffer.from(wrongKey, "base64")).update(m[1], "utf8").digest("base64") : null;
      out.badKey[name] = { status: e.statusCode, code: e.code, detailMatchesSignature: recomputed === sent, detail: detail && detail.value };
    }
  }

  await step("job.deleteMethod", () => client.job.deleteMethod(jobId));
  await step("pool.deleteMethod", () => client.pool.deleteMethod(poolId));
  out.jobGone = await waitFor("job gone", async () => {
    try {
      await client.job.get(jobId);
      return null;
    } catch (e) {
      return e.statusCode === 404 ? e.code : null;
    }
  });
  assert.ok(out.steps.length > 0);
}

main().then(
  () => {
    process.stdout.write(JSON.stringify(out) + "\n");
  },
  (err) => {
    out.error = { message: String(err && err.message), status: err && err.statusCode, code: err && err.code };
    process.stdout.write(JSON.stringify(out) + "\n");
    process.exit(1);
  },
);
