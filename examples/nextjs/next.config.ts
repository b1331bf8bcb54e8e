import path from "node:path";

import type { NextConfig } from "next";

// @broker/client is a link to ../../clients/ts (a `file:` dependency), outside this folder:
// let Turbopack and the output file tracing look as far up as the repository root.
const repositoryRoot = path.resolve(__dirname, "..", "..");

const nextConfig: NextConfig = {
  reactStrictMode: true,
  turbopack: { root: repositoryRoot },
  outputFileTracingRoot: repositoryRoot,
};

export default nextConfig;
