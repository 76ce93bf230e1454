#!/usr/bin/env node
// The seed's CLI example: lists the tenant's projects, one per line (id, tab, name).
//   DGIDGI_API_URL=http://127.0.0.1:8080/api/v1 DGIDGI_API_KEY=chy_sdk_... node list-projects.mjs
import { createClient, projects } from '@dgidgi-one/sdk';

// Initialize for CLI (the key comes from DGIDGI_API_KEY)
createClient({
  baseURL: process.env.DGIDGI_API_URL,
});

// List projects
const { data } = await projects.list();
data.forEach((p) => console.log(`${p.id}\t${p.name}`));
