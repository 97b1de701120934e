"""Write example_workflows/*.json (the workflows ComfyUI's template browser lists for the pack) from a real
ComfyUI's editor: each node is created and linked through the editor's own LiteGraph (whose connect() refuses a
link between types it does not accept), its widgets set, and the graph saved as the editor serialises it. Run it
again when a node's inputs change (tests/unit/test_node_workflows.py fails on a saved workflow whose widget values
no longer fit the node).

    # a ComfyUI with the pack in custom_nodes/ (see ../shared/tools/comfyui-cpu), then:
    python tools/build_example_workflows.py [--url http://127.0.0.1:8188] [--out example_workflows]

Headless chromium (Debian's /usr/bin/chromium) driven by Playwright, as tools/screenshot.py.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from playwright.sync_api import sync_playwright

CKPT = "v1-5-pruned-emaonly.safetensors"
CHAR = "Moon Academy / Aiko"

BUILD = r"""
async ([spec, ckpt, chr]) => {
  const app = window.app; const LG = window.LiteGraph;
  app.graph.clear();
  const nodes = {};
  const problems = [];
  for (const n of spec.nodes) {
    const node = LG.createNode(n.type);
    if (!node) { problems.push('no node type ' + n.type); continue; }
    node.pos = n.pos;
    app.graph.add(node);
    if (n.title) node.title = n.title;
    for (const [name, value] of Object.entries(n.widgets || {})) {
      const w = node.widgets.find((w) => w.name === name);
      if (!w) { problems.push(`${n.type}: no widget ${name}`); continue; }
      w.value = value === '$CKPT' ? ckpt : value === '$CHAR' ? chr : value;
    }
    if (n.size) node.setSize(n.size);
    nodes[n.id] = node;
  }
  for (const [from, out, to, input] of spec.links) {
    const a = nodes[from], b = nodes[to];
    const link = a.connect(typeof out === 'number' ? out : a.findOutputSlot(out), b, input);
    if (!link) problems.push(`refused: ${spec.nodes.find(n=>n.id===from).type}.${out} -> ${spec.nodes.find(n=>n.id===to).type}.${input}`);
  }
  return {problems, workflow: JSON.stringify(app.graph.serialize())};
}
"""

def spec_txt2img(via_loader=False):
    nodes = [
        {"id": "ckpt", "type": "CheckpointLoaderSimple", "pos": [40, 120], "widgets": {"ckpt_name": "$CKPT"}},
        {"id": "prompt", "type": "LoraStudioCharacterPrompt", "pos": [40, 330], "size": [330, 360],
         "widgets": {"character": "$CHAR", "additions": "", "learned_negatives": True, "seed": 0}},
        {"id": "lora", "type": "LoraLoader" if via_loader else "LoraStudioLoadCharacterLoRA", "pos": [420, 120],
         "widgets": ({"strength_model": 0.8, "strength_clip": 0.8} if via_loader else
                     {"character": "$CHAR", "strength_model": 0.8, "strength_clip": 0.8})},
        {"id": "pos", "type": "CLIPTextEncode", "pos": [800, 120], "title": "positive (Character Prompt)"},
        {"id": "neg", "type": "CLIPTextEncode", "pos": [800, 300], "title": "negative (Character Prompt)"},
        {"id": "latent", "type": "EmptyLatentImage", "pos": [800, 480], "widgets": {"batch_size": 1}},
        {"id": "ks", "type": "KSampler", "pos": [1180, 120], "widgets": {"denoise": 1.0}},
        {"id": "vae", "type": "VAEDecode", "pos": [1560, 120]},
        {"id": "save", "type": "SaveImage", "pos": [1800, 120], "size": [320, 360], "widgets": {"filename_prefix": "lora_studio/character"}},
    ]
    links = [["ckpt", 0, "lora", "model"], ["ckpt", 1, "lora", "clip"],
             ["lora", 1, "pos", "clip"], ["lora", 1, "neg", "clip"],
             ["prompt", "positive", "pos", "text"], ["prompt", "negative", "neg", "text"],
             ["prompt", "width", "latent", "width"], ["prompt", "height", "latent", "height"],
             ["lora", 0, "ks", "model"], ["pos", 0, "ks", "positive"], ["neg", 0, "ks", "negative"],
             ["latent", 0, "ks", "latent_image"], ["prompt", "seed", "ks", "seed"], ["prompt", "steps", "ks", "steps"],
             ["prompt", "cfg", "ks", "cfg"], ["prompt", "sampler_name", "ks", "sampler_name"],
             ["prompt", "scheduler", "ks", "scheduler"], ["ks", 0, "vae", "samples"], ["ckpt", 2, "vae", "vae"],
             ["vae", 0, "save", "images"]]
    if via_loader:
        links.append(["prompt", "lora_name", "lora", "lora_name"])
    return {"nodes": nodes, "links": links}

def spec_dataset():
    s = spec_txt2img()
    s["nodes"] = [n for n in s["nodes"] if n["id"] != "save"]
    s["nodes"].append({"id": "ds", "type": "LoraStudioSaveToDataset", "pos": [1800, 120], "size": [360, 420],
                       "widgets": {"character": "$CHAR", "caption": ""}})
    for n in s["nodes"]:
        if n["id"] == "latent":
            n["widgets"] = {"batch_size": 4}
        if n["id"] == "prompt":
            n["widgets"]["additions"] = "full body, simple background"
    s["links"] = [link for link in s["links"] if link[2] != "save"] + [["vae", 0, "ds", "images"]]
    return s

def spec_train():
    return {"nodes": [{"id": "train", "type": "LoraStudioTrainLoRA", "pos": [40, 120], "size": [420, 560],
                       "widgets": {"character": "$CHAR", "base_model": "$CKPT"}}], "links": []}

NOTES = {
    "character_txt2img_with_lora": (
        "### A character with its LoRA\n\n"
        "**Character Prompt** reads the character from LoRA Studio: its prompt (project style + trigger word + "
        "design prompt + your additions), its negative prompt (with the terms learned from rejections while "
        "*learned_negatives* is on) and the project's sampler settings, wired into KSampler and EmptyLatentImage.\n\n"
        "**Load Character LoRA** applies the character's current LoRA (the newest one the studio trained); a "
        "character without one passes the model through and says so on the node.\n\n"
        "Characters are named *Project / Character*. After creating one in the LoRA Studio panel, use "
        "*Refresh node definitions* (or press R) to see it here."),
    "character_txt2img_via_loraloader": (
        "### A character with ComfyUI's own LoraLoader\n\n"
        "Character Prompt's **lora_name** is a combo output: it links to LoraLoader's *lora_name* like a picked "
        "file. When the character has no LoRA yet, Character Prompt stops the run with that message "
        "(use Load Character LoRA to go on without one)."),
    "generate_to_dataset": (
        "### Generate, then add to the dataset\n\n"
        "**Save to Dataset** puts the images in the character's *pending* queue (with this graph as metadata) "
        "and shows them on the node; review them in the LoRA Studio panel. Load Character LoRA passes the model "
        "through until the character has a LoRA, so this works before the first training too."),
    "train_lora": (
        "### Train a LoRA\n\n"
        "**Train LoRA** trains on the character's approved images (the same job as the panel's), shows the "
        "progress and sample images on the node and returns the file name (a combo output for LoraLoader). "
        "Queued again with the same inputs and the same approved images it returns that LoRA at once; turn "
        "*force* on to train again. Other prompts may wait in the queue behind it: they run after the training."),
}


def with_note(name, spec):
    spec["nodes"].append({"id": "note", "type": "MarkdownNote", "pos": [40, -260], "size": [620, 220],
                          "widgets": {"text": NOTES[name]}})
    return spec


SPECS = {"character_txt2img_with_lora": spec_txt2img(), "character_txt2img_via_loraloader": spec_txt2img(True),
         "generate_to_dataset": spec_dataset(), "train_lora": spec_train()}

READY = ("() => !!(window.app && window.app.graph && window.LiteGraph && "
         "LiteGraph.registered_node_types['LoraStudioTrainLoRA'])")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8188")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "example_workflows")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        page.goto(args.url)
        page.wait_for_function(READY, timeout=120000)
        for name, spec in SPECS.items():
            res = page.evaluate(BUILD, [with_note(name, spec), CKPT, CHAR])
            if res["problems"]:
                raise SystemExit(f"{name}: {res['problems']}")
            workflow = json.loads(res["workflow"])  # serialised in the page: undefined stays out (not null)
            (args.out / f"{name}.json").write_text(json.dumps(workflow, indent=1) + "\n", encoding="utf-8")
            print(f"{name}: {len(workflow['nodes'])} nodes, {len(workflow['links'])} links")
        browser.close()


if __name__ == "__main__":
    main()
