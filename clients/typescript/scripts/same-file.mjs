// Fails when the committed generated types differ from a fresh generation:
// src/schema.d.ts must be regenerated (npm run generate) with the API.
import { readFileSync } from "node:fs";

const [committed, fresh] = process.argv.slice(2);
if (readFileSync(committed, "utf8") !== readFileSync(fresh, "utf8")) {
  console.error(`${committed} is out of date with internal/api/openapi.yaml: run npm run generate`);
  process.exit(1);
}
console.log(`${committed} is up to date`);
