// The soak's load: PAYMENTS payments at a steady RATE per second to BASE_URL, nothing else
// (bench/soak.py watches the stack meanwhile). Fresh UUIDs, amount 19.90, 1.5 s client timeout.
import http from 'k6/http';

const RATE = Number(__ENV.RATE || 1000);
const PAYMENTS = Number(__ENV.PAYMENTS || 1000000);
const BASE_URL = __ENV.BASE_URL || 'http://127.0.0.1:9999';
const PARAMS = { headers: { 'Content-Type': 'application/json' }, timeout: '1500ms', tags: { name: 'payments' } };

export const options = {
  discardResponseBodies: true,
  scenarios: {
    soak: {
      executor: 'constant-arrival-rate',
      rate: RATE,
      timeUnit: '1s',
      duration: `${Math.ceil(PAYMENTS / RATE)}s`,
      preAllocatedVUs: 50,
      maxVUs: 400,
    },
  },
  summaryTrendStats: ['med', 'p(99)', 'max'],
};

export default function () {
  http.post(`${BASE_URL}/payments`, JSON.stringify({ correlationId: crypto.randomUUID(), amount: 19.9 }), PARAMS);
}
