// Stable Audio 3: the template browser's cards of this pack say what each template does.
//
// ComfyUI's frontend lists a custom node pack's templates by file name only (GET /workflow_templates
// gives names, and each card's description is that name again). GET /sa3/templates
// (nodes/templates.py) gives every template's description; this extension writes it into the
// pack's cards (data-testid "template-workflow-<name>") whenever the browser shows them. Without it
// the cards still work, with the file name as their description.
import { app } from "../../../scripts/app.js"; // served as /extensions/<pack>/js/template_descriptions.js
import { api } from "../../../scripts/api.js";

const CARD = "template-workflow-";
let descriptions = new Map(); // template name -> description

function describeCards() {
  for (const card of document.querySelectorAll(`[data-testid^="${CARD}"]`)) {
    const text = descriptions.get(card.dataset.testid.slice(CARD.length));
    if (!text) continue;
    for (const line of card.querySelectorAll("p")) {
      const node = line.firstChild; // Vue's text node: edited in place, so Vue keeps tracking it
      if (node?.nodeType === Node.TEXT_NODE && line.textContent.trim() === card.dataset.testid.slice(CARD.length)) {
        node.data = text;
        line.title = text;
      }
    }
  }
}

app.registerExtension({
  name: "StableAudio3.TemplateDescriptions",
  async setup() {
    try {
      const response = await api.fetchApi("/sa3/templates");
      if (!response.ok) return;
      const { templates } = await response.json();
      descriptions = new Map(templates.map((t) => [t.name, t.description]));
    } catch (e) {
      console.warn("Stable Audio 3: no template descriptions", e);
      return;
    }
    new MutationObserver(describeCards).observe(document.body, { childList: true, subtree: true });
  },
});
