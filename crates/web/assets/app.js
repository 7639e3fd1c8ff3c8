// PLACEHOLDER from the web-gateway branch: the page helper's app.js replaces this file.
"use strict";
