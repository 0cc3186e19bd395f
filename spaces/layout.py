"""The Space's page: four tabs (Inspect, Feature browser, Steering, Shared concepts) wired to the handlers."""

from __future__ import annotations

import gradio as gr

from handlers import MAX_CONCEPTS, UPLOAD_HINT, Handlers, guarded
from state import SpaceState

TITLE = "Sparse CLIP explorer"


def build_demo(state: SpaceState) -> gr.Blocks:
    h = Handlers(state)
    samples = state.gallery_items(state.gallery_rows)

    def select_index(evt: gr.SelectData):
        """A gallery click: the image picked, and None for the upload it replaces (the upload would win otherwise)."""
        return state.gallery_rows[int(evt.index)], None

    with gr.Blocks(title=TITLE) as demo:
        gr.Markdown(
            f"# {TITLE}\nModel `{state.model_name}` · {state.encoder.width:,} features · "
            f"{len(state.vocabulary):,} concept words · atlas of {state.atlas.num_images:,} images"
            + (f" · evolution over {', '.join(state.evolution.names)}" if state.evolution else "")
            + f"\n\nUploads: {UPLOAD_HINT}."
        )
        with gr.Tabs():
            with gr.Tab("Inspect", id="inspect"):
                with gr.Row():
                    with gr.Column(scale=1):
                        inspect_gallery = gr.Gallery(samples, label="Pick an image", columns=6, height=300, allow_preview=False, elem_id="inspect-gallery")
                        inspect_upload = gr.File(label="…or upload an image", type="filepath", elem_id="inspect-upload")
                        inspect_text = gr.Textbox(label="…or type a text", placeholder="a dog on the grass", elem_id="inspect-text")
                        inspect_text_button = gr.Button("Inspect text", variant="primary")
                    with gr.Column(scale=2):
                        inspect_status = gr.Markdown(elem_id="inspect-status")
                        inspect_image = gr.Image(label="input", height=160, interactive=False)
                        inspect_chart = gr.Plot(label="active features", elem_id="inspect-chart")
                inspect_table = gr.Dataframe(label="active features", interactive=False, elem_id="inspect-table")
                inspect_tops = gr.Gallery(label="top images of the strongest features", columns=8, height=260, allow_preview=False)
                outputs = [inspect_status, inspect_image, inspect_chart, inspect_table, inspect_tops]
                inspect_gallery.select(guarded(5)(h.inspect_gallery), None, outputs, api_name=False)
                inspect_upload.upload(guarded(5)(h.inspect_upload), inspect_upload, outputs, api_name="inspect_upload")
                inspect_text_button.click(guarded(5)(h.inspect_text), inspect_text, outputs, api_name="inspect_text")
                inspect_text.submit(guarded(5)(h.inspect_text), inspect_text, outputs, api_name=False)

            with gr.Tab("Feature browser", id="browser"):
                with gr.Row():
                    browse_query = gr.Textbox(label="Concept word or feature id", placeholder="dog  or  42", elem_id="browse-query", scale=3)
                    browse_button = gr.Button("Search", variant="primary", scale=1)
                browse_details = gr.Markdown(elem_id="browse-status")
                browse_matches = gr.Dataframe(label="features", interactive=False)
                browse_gallery = gr.Gallery(label="top images", columns=8, height=200, allow_preview=False)
                gr.Markdown("### Evolution across training checkpoints")
                with gr.Row():
                    evolution_table = gr.Dataframe(label="top words per checkpoint", interactive=False)
                    evolution_plot = gr.Plot(label="evolution")
                evolution_gallery = gr.Gallery(label="top images per checkpoint", columns=9, height=160, allow_preview=False)
                browse_outputs = [browse_details, browse_matches, browse_gallery, evolution_table, evolution_plot, evolution_gallery]
                browse_button.click(guarded(6)(h.browse), browse_query, browse_outputs, api_name="browse")
                browse_query.submit(guarded(6)(h.browse), browse_query, browse_outputs, api_name=False)

            with gr.Tab("Steering", id="steering"):
                steer_row = gr.State(None)
                with gr.Row():
                    with gr.Column(scale=1):
                        steer_gallery = gr.Gallery(samples, label="Choose an image", columns=6, height=260, allow_preview=False, elem_id="steer-gallery")
                        steer_upload = gr.File(label="…or upload one", type="filepath", elem_id="steer-upload")
                        steer_suppress = gr.Textbox(label=f"Suppress concepts (comma-separated, at most {MAX_CONCEPTS})", placeholder="dog", elem_id="steer-suppress")
                        steer_boost = gr.Textbox(label=f"Boost concepts (comma-separated, at most {MAX_CONCEPTS})", placeholder="cat", elem_id="steer-boost")
                        steer_topk = gr.Slider(1, 8, value=2, step=1, label="features per concept (top-K through the text tower)")
                        steer_strength = gr.Slider(0.0, 6.0, value=2.0, step=0.25, label="boost strength SS (x the image's largest activation)")
                        steer_button = gr.Button("Steer", variant="primary")
                    with gr.Column(scale=2):
                        steer_status = gr.Markdown("Choose an image, then name concepts to suppress or boost.", elem_id="steer-status")
                        steer_image = gr.Image(label="image", height=140, interactive=False)
                        with gr.Row():
                            steer_before = gr.Label(label="zero-shot before", num_top_classes=5, elem_id="steer-before")
                            steer_after = gr.Label(label="zero-shot after", num_top_classes=5, elem_id="steer-after")
                        steer_retrieval_before = gr.Gallery(label="retrieval before", columns=5, height=150, allow_preview=False)
                        steer_retrieval_after = gr.Gallery(label="retrieval after", columns=5, height=150, allow_preview=False)
                        # the captioning VLM's answer before/after steering (when one is loaded)
                        steer_caption = gr.Markdown(
                            "_Captions of the image before and after steering appear here._" if state.captioner is not None else
                            "_No captions here: this Space runs without a captioning model for these features. "
                            "Where one is installed, the captions of the image before and after steering appear in this box._",
                            elem_id="steer-caption",
                        )
                # Picking a gallery image replaces an earlier upload (the upload would win otherwise).
                steer_gallery.select(select_index, None, [steer_row, steer_upload], api_name=False)
                steer_button.click(
                    guarded(7)(h.steer),
                    [steer_row, steer_upload, steer_suppress, steer_boost, steer_topk, steer_strength],
                    [steer_status, steer_image, steer_before, steer_after, steer_retrieval_before, steer_retrieval_after, steer_caption],
                    api_name="steer",
                )

            with gr.Tab("Shared concepts", id="shared"):
                shared_row = gr.State(None)
                with gr.Row():
                    with gr.Column(scale=1):
                        shared_gallery = gr.Gallery(samples, label="Choose an image", columns=6, height=260, allow_preview=False, elem_id="shared-gallery")
                        shared_upload = gr.File(label="…or upload one", type="filepath", elem_id="shared-upload")
                    with gr.Column(scale=1):
                        shared_text = gr.Textbox(label="Text", placeholder="a smiling face", elem_id="shared-text")
                        shared_button = gr.Button("Compare", variant="primary")
                        shared_status = gr.Markdown(elem_id="shared-status")
                shared_chart = gr.Plot(label="shared features")
                shared_table = gr.Dataframe(label="shared features", interactive=False)
                shared_gallery.select(select_index, None, [shared_row, shared_upload], api_name=False)
                shared_button.click(guarded(3)(h.shared), [shared_row, shared_upload, shared_text], [shared_status, shared_chart, shared_table], api_name="shared")
    return demo
