"""The folded inference network: a trained FeedbackGCN in eval mode rearranged for speed.

The same network, with the same results up to float32 rounding: batch norm and the graph
convolution's bias folded into one scale and shift per node and feature; X W as one matrix
product over the whole batch, A Y as one batched product; the cheaper order of A (X W) = (A X)
W; the products after the fed-back label (257 features) split into 256 + 1 output columns; the
classifier's pooling, 1x3 convolution and graph weights folded into one product; and the batch
cut into blocks small enough for the activations to stay in cache.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from model.learn.gcn import (
    COORDS,
    Classifier,
    Corrector,
    FeedbackGCN,
    GCBlock,
    GCNConfig,
    GraphConv,
    GraphLayer,
    fed_back,
)

BLOCK = 32  # samples per block of the folded forward pass
ALIGN = 8  # a wide product's output width is split into a multiple of ALIGN and the rest
WIDE = 64  # (a product with output rows of 257 floats runs at 3/4 of the speed of 256)


class _FoldedConv:
    """A graph convolution on X (B, nodes, features): A (X W) + b when called; `products`
    leaves the bias to a layer that folds it into its shift."""

    def __init__(self, conv: GraphConv):
        weight = conv.weight.detach()
        self.adjacency = conv.adjacency.detach().contiguous()
        self.bias = conv.bias.detach()
        self.in_features, self.out_features = weight.shape
        self.adjacency_first = self.in_features < self.out_features
        main = self.out_features
        if main >= WIDE and main % ALIGN:
            main -= main % ALIGN
        self.weights = [weight[:, :main].contiguous()]
        if main < self.out_features:
            self.weights.append(weight[:, main:].contiguous())

    def mix(self, y: torch.Tensor) -> torch.Tensor:
        """A Y for every sample of Y (B, nodes, features)."""
        return torch.bmm(self.adjacency.expand(y.shape[0], -1, -1), y)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """A (X W) + b."""
        parts = self.products(x)
        return (parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1)).add_(self.bias)

    def products(self, x: torch.Tensor) -> list[torch.Tensor]:
        """A (X W) as parts along the output features."""
        if self.adjacency_first:
            ax = self.mix(x).flatten(0, 1)
            return [(ax @ w).view(*x.shape[:2], w.shape[1]) for w in self.weights]
        flat = x.flatten(0, 1)
        return [self.mix((flat @ w).view(*x.shape[:2], w.shape[1])) for w in self.weights]


class _FoldedLayer:
    """GraphLayer in eval mode: relu(A (X W) * scale + shift), dropout gone."""

    def __init__(self, layer: GraphLayer):
        self.conv = _FoldedConv(layer.conv)
        norm = layer.norm
        shape = (self.conv.adjacency.shape[0], self.conv.out_features)
        self.scale = (norm.weight.detach() / torch.sqrt(norm.running_var + norm.eps)).view(shape)
        self.shift = ((self.conv.bias - norm.running_mean.view(shape)) * self.scale
                      + norm.bias.detach().view(shape))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.finish(self.conv.products(x))

    def finish(self, parts: list[torch.Tensor]) -> torch.Tensor:
        """Scale, shift and ReLU of the convolution's products."""
        if len(parts) == 1:
            return torch.addcmul(self.shift, parts[0], self.scale, out=parts[0]).relu_()
        out = parts[0].new_empty(*parts[0].shape[:2], self.conv.out_features)
        start = 0
        for part in parts:
            cols = slice(start, start + part.shape[-1])
            torch.addcmul(self.shift[:, cols], part, self.scale[:, cols], out=out[..., cols])
            start = cols.stop
        return out.relu_()


class _FoldedBlock:
    def __init__(self, block: GCBlock):
        self.first = _FoldedLayer(block.first)
        self.second = _FoldedLayer(block.second)

    def __call__(self, x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        return torch.add(x, self.second(self.first(x)), out=out)


class _FoldedClassifier:
    """Pool by 2, the 1x3 convolution and the graph layer's weights as one product from the
    three input channels to the three output channels; then A, scale, shift, ReLU, linear,
    log-softmax."""

    def __init__(self, classifier: Classifier, cfg: GCNConfig):
        half = cfg.hidden // 2
        self.n_dct = cfg.n_dct
        self.layer = _FoldedLayer(classifier.layer)
        weight = classifier.layer.conv.weight.detach()  # (half, n_dct)
        conv = classifier.conv
        impulses = torch.eye(COORDS * half, device=weight.device, dtype=weight.dtype)
        # response[ci, g, co, f]: feature g of input channel ci -> feature f of output channel co
        response = nn.functional.conv2d(impulses.view(-1, COORDS, 1, half),
                                        conv.weight.detach(), padding=conv.padding)
        response = response.view(COORDS, half, COORDS, half)
        pooled = 0.5 * torch.einsum("igof,fd->igod", response, weight)  # pool = half the pair sum
        self.weight = pooled.reshape(COORDS * half, COORDS * cfg.n_dct)
        self.constant = (conv.bias.detach()[:, None] * weight.sum(0)).view(COORDS, 1, cfg.n_dct)
        self.out_weight = classifier.out.weight.detach().T
        self.out_bias = classifier.out.bias.detach()

    def __call__(self, h: torch.Tensor) -> torch.Tensor:
        b, n, f = h.shape
        joints = n // COORDS
        channels = h.view(b, COORDS, joints, f)
        # pairs[b, j, c, g]: the sum of features 2g and 2g + 1 of channel c at joint j
        pairs = h.new_empty(b, joints, COORDS, f // 2)
        torch.add(channels[..., 0::2], channels[..., 1::2], out=pairs.transpose(1, 2))
        xw = pairs.view(b * joints, COORDS * (f // 2)) @ self.weight
        xw = xw.view(b, joints, COORDS, self.n_dct).transpose(1, 2) + self.constant
        xw = xw.reshape(b, n, self.n_dct)
        y = self.layer.finish([self.layer.conv.mix(xw)])
        return torch.log_softmax(torch.addmm(self.out_bias, y.flatten(1), self.out_weight), -1)


class _FoldedCorrector:
    def __init__(self, corrector: Corrector):
        self.before = _FoldedBlock(corrector.before)
        self.after = _FoldedBlock(corrector.after)
        self.out = _FoldedConv(corrector.out)
        self.attention = None if corrector.attention is None else _FoldedConv(corrector.attention)
        linear = corrector.feedback
        self.feedback = None if linear is None else (linear.weight.detach().T,
                                                     linear.bias.detach())

    def __call__(self, h: torch.Tensor, label: torch.Tensor | None
                 ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Deltas and the attention (None without one), as Corrector.forward."""
        if self.feedback is None:
            y = self.before(h)
        else:
            b, n, f = h.shape
            y = h.new_empty(b, n, f + 1)
            self.before(h, out=y[..., :f])
            weight, bias = self.feedback
            torch.addmm(bias, label, weight, out=y[..., f])
        y = self.after(y)
        return self.out(y), None if self.attention is None else self.attention(y).sigmoid_()


class FoldedGCN:
    """A FeedbackGCN's eval-mode forward pass for inference (see above): the same outputs up
    to float32 rounding, from the module's weights as they were when it was built."""

    def __init__(self, module: FeedbackGCN):
        cfg = module.config
        self.config = cfg
        self.variant = module.variant
        with torch.no_grad():
            self.trunk = _FoldedLayer(module.trunk)
            self.classifier = (None if module.classifier is None
                               else _FoldedClassifier(module.classifier, cfg))
            self.corrector = (None if module.corrector is None
                              else _FoldedCorrector(module.corrector))

    def __call__(self, x: torch.Tensor, true_onehot: torch.Tensor | None = None,
                 given: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, nodes, n_dct) -> log-probabilities (B, classes) and DCT deltas (B, nodes,
        n_dct), as FeedbackGCN.forward in eval mode; `given` as model.learn.gcn.fed_back."""
        log_probs, deltas, _ = self.outputs(x, true_onehot, given)
        return log_probs, deltas

    @torch.inference_mode()
    def outputs(self, x: torch.Tensor, true_onehot: torch.Tensor | None = None,
                given: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """__call__ and the attention (B, nodes, 1), None for a network without one, as
        FeedbackGCN.outputs in eval mode."""
        blocks = [self._block(x[i : i + BLOCK],
                              None if true_onehot is None else true_onehot[i : i + BLOCK], given)
                  for i in range(0, len(x), BLOCK)]
        if not blocks:
            return self._block(x, true_onehot, given)
        attention = None if blocks[0][2] is None else torch.cat([a for *_, a in blocks])
        return (torch.cat([lp for lp, _, _ in blocks]), torch.cat([d for _, d, _ in blocks]),
                attention)

    def _block(self, x: torch.Tensor, true_onehot: torch.Tensor | None, given: bool
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        h = self.trunk(x.contiguous())
        if self.classifier is not None:
            log_probs = self.classifier(h)
        else:
            n_classes = self.config.n_classes
            log_probs = x.new_full((x.shape[0], n_classes), -math.log(n_classes))
        if self.corrector is None:
            return log_probs, torch.zeros_like(x), None
        return log_probs, *self.corrector(h, fed_back(self.variant, log_probs, true_onehot,
                                                      given))
