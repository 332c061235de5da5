// The scaling bench's load (bench/scale.py): fresh payments at a constant RATE per second to
// BASE_URL for DURATION seconds, nothing else. Amount 19.90, 1.5 s client timeout (as the
// official test). The summary (ok and failed POSTs, iterations k6 could not start in time, p99)
// goes to SUMMARY as JSON.
import http from 'k6/http';
import { check } from 'k6';

const RATE = Number(__ENV.RATE || 500);
const DURATION = Number(__ENV.DURATION || 20);
const BASE_URL = __ENV.BASE_URL || 'http://127.0.0.1:9999';
const PARAMS = { headers: { 'Content-Type': 'application/json' }, timeout: '1500ms', tags: { name: 'payments' } };

export const options = {
  discardResponseBodies: true,
  scenarios: {
    offered: {
      executor: 'constant-arrival-rate',
      rate: RATE,
      timeUnit: '1s',
      duration: `${DURATION}s`,
      preAllocatedVUs: Math.min(Math.max(RATE / 10, 20), 400),
      maxVUs: 2000,
    },
  },
  summaryTrendStats: ['med', 'p(99)', 'max'],
};

export default function () {
  const response = http.post(`${BASE_URL}/payments`,
    JSON.stringify({ correlationId: crypto.randomUUID(), amount: 19.9 }), PARAMS);
  check(response, { ok: (r) => r.status >= 200 && r.status < 300 });
}

function value(data, metric, field) {
  const m = data.metrics[metric];
  return m ? m.values[field] : 0;
}

export function handleSummary(data) {
  const summary = {
    ok: value(data, 'checks', 'passes'),
    failed: value(data, 'checks', 'fails'),
    dropped: value(data, 'dropped_iterations', 'count') || 0,
    p99_ms: value(data, 'http_req_duration', 'p(99)'),
    med_ms: value(data, 'http_req_duration', 'med'),
  };
  return { [__ENV.SUMMARY]: JSON.stringify(summary) };
}
