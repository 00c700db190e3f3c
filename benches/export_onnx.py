#!/usr/bin/env python3
"""Exports a BERT-family model directory's encoder (last_hidden_state) to ONNX for the
onnxruntime peer in compare_peers.py, so that script needs no PyTorch itself.

Needs torch and transformers (any environment that has them):

    python3 benches/export_onnx.py MODEL_DIR OUT.onnx
"""
import sys

import torch
from transformers import AutoModel


class Encoder(torch.nn.Module):
    def __init__(self, bert):
        super().__init__()
        self.bert = bert

    def forward(self, input_ids, attention_mask, token_type_ids):
        return self.bert(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).last_hidden_state


def main():
    model_dir, out = sys.argv[1], sys.argv[2]
    bert = AutoModel.from_pretrained(model_dir, attn_implementation="eager").eval()
    names = ["input_ids", "attention_mask", "token_type_ids"]
    dummy = (torch.tensor([[101, 7592, 2088, 102]] * 2), torch.ones(2, 4, dtype=torch.int64), torch.zeros(2, 4, dtype=torch.int64))
    with torch.no_grad():
        torch.onnx.export(
            Encoder(bert), dummy, out,
            input_names=names, output_names=["last_hidden_state"],
            dynamic_axes={n: {0: "batch", 1: "seq"} for n in names + ["last_hidden_state"]},
            opset_version=17, dynamo=False,
        )


if __name__ == "__main__":
    main()
