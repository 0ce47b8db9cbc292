"""The course-specific content of the reports, held as data: the notes' file names, the chapter-7 exercises
(``exercises.md``) and the claims quoted from the notes (``claims.md``), one table per page.

The notes this project started from (Chinese study notes on *Dive into Deep Learning*, chapters 3–7) are not in this
repository; every entry cites them by file and line. :mod:`.exercises` and :mod:`.claims` compute and render the
answers, and find each entry here by its key (the tests check that every entry has an answer and every answer an
entry).

Plain frozen-dataclass literals rather than JSON shipped as package data: the quoted figures keep their types (batch
sizes and input sizes as ints, the notes' MiB to the last printed digit), a misspelt field fails on import rather
than while a page renders, and there is no package data to install or to find at run time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: The notes, by the number each file name starts with (the answers' prose cites them as "000 line 2614").
NOTES_000 = "000_8357d8bc530bdd25.txt"   # chapter-7 exercise answers, with the author's memory measurements
NOTES_001 = "001_fac40185f130e3db.txt"
NOTES_003 = "003_5d0edbe44cf5956c.txt"


@dataclass(frozen=True)
class Exercise:
    """A chapter-7 exercise that asks what a network costs: its number in the book (also the section heading of
    ``exercises.md``), the question as the notes paraphrase it, and the line of :data:`NOTES_000` it is on."""

    number: str
    question: str
    line: int


#: ``exercises.md``, in the book's order.
EXERCISES: tuple[Exercise, ...] = (
    Exercise("7.1.3", "Change the batch size and observe the model's accuracy and GPU memory.", 248),
    Exercise("7.1.4", "Analyse AlexNet's computational performance: which part takes the most memory, which the "
                      "most compute, and how is memory bandwidth when computing the results?", 351),
    Exercise("7.2.2", "Compared with AlexNet, VGG is much slower and needs more GPU memory. Why?", 573),
    Exercise("7.2.3", "Change the height and width of the Fashion-MNIST images from 224 to 96. What does it do?", 585),
    Exercise("7.3.3", "Compute NiN's resource use: parameters, compute, memory in training and in prediction.", 1147),
    Exercise("7.4.2", "What is the smallest image size GoogLeNet can use?", 1595),
    Exercise("7.4.3", "Compare the parameter sizes of AlexNet, VGG and NiN with GoogLeNet. How do the latter two "
                      "reduce them so much?", 1603),
    Exercise("7.6.2–7.6.3", "Implement the variants of Table 1 of the ResNet paper; implement the bottleneck.", 2089),
    Exercise("7.7.2", "One advantage of DenseNet is that it has fewer parameters than ResNet. Why?", 2567),
    Exercise("7.7.3", "DenseNet is criticised for using too much memory. Is it true (try 224×224)? Is there another "
                      "way to reduce it; does it need a framework change?", 2575),
)


@dataclass(frozen=True)
class Citation:
    """Where in the notes: a file and its lines — several separate lines, or with ``span`` one passage from the
    first line to the last."""

    file: str
    lines: tuple[int, ...]
    span: bool = False

    def __str__(self) -> str:
        if len(self.lines) == 1:
            return f"{self.file}, line {self.lines[0]}"
        joined = "–".join(map(str, self.lines)) if self.span else ", ".join(map(str, self.lines))
        return f"{self.file}, lines {joined}"


@dataclass(frozen=True)
class Claim:
    """A figure the notes state: the section heading of ``claims.md`` (its anchor is linked from ``exercises.md``),
    what the notes say in English, where (citations and the original words), and the claimed figures the check
    compares with ours (never mutated; what each key means is said beside each entry)."""

    key: str
    title: str
    says: str
    cited: tuple[Citation, ...]
    quote: str
    figures: dict[Any, Any] = field(default_factory=dict)

    @property
    def source(self) -> str:
        """The citations as one line: "000_….txt, lines 287, 307, 327"."""
        return "; ".join(map(str, self.cited))


#: ``claims.md``, in the order of the page.
CLAIMS: tuple[Claim, ...] = (
    Claim("alexnet-vs-lenet", "AlexNet against LeNet",
          "AlexNet has 10× the parameters and 260× the compute of LeNet", (Citation(NOTES_001, (62,)),),
          "AlexNet 是更大更深更胖的 LeNet，10× 参数个数，260× 计算复杂度",
          {"params_ratio": 10, "macs_ratio": 260}),
    Claim("alexnet-fc-gigabyte", "AlexNet's fully connected layers",
          "AlexNet's two large fully connected layers hold nearly 1 GB of parameters",
          (Citation(NOTES_001, (36,)), Citation(NOTES_003, (2753,))),
          "这两个巨大的全连接层拥有将近1GB的模型参数",
          {"gigabytes": 1}),
    Claim("alexnet-channels", "AlexNet's channels", "AlexNet's convolutions have 10× LeNet's channels",
          (Citation(NOTES_001, (34,)),), "AlexNet的卷积通道数目是LeNet的10倍",
          {"channels_ratio": 10}),
    Claim("alexnet-memory", "AlexNet training memory at 224",
          "AlexNet training at 224×224 uses 3.74 GB at batch 64, 7.93 GB at batch 128 and 7.93 GB at batch 512",
          (Citation(NOTES_000, (287, 307, 327)),), "batch_size=64，显存占用为：3.74GB … 128 … 7.93GB … 512 … 7.93GB",
          {64: 3.74, 128: 7.93, 512: 7.93}),  # batch → GB in use during training at 224
    Claim("nin-hand-count", "NiN parameters and multiply-adds",
          "NiN has 2,013,160 parameters and ≈8.98·10⁸ multiply-adds (hand count: 3 input channels, no biases)",
          (Citation(NOTES_000, (1150, 1175), span=True),),
          "模型的总参数数量为 … =2013160 … 总计算量为 … =898208840≈8.9×10^8",
          # per NiN block: parameters without biases, and the side of the map the hand count multiplies them by
          {"params": (53280, 745472, 1179648, 34760), "maps": (54, 27, 13, 1)}),
    Claim("googlenet-smallest", "Smallest GoogLeNet input", "the smallest input GoogLeNet can use is 224×224",
          (Citation(NOTES_000, (1599,)),), "224 * 224",
          {"size": 224}),
    Claim("densenet-memory", "DenseNet peak memory",
          "DenseNet training at 224×224, batch 128, peaks at 4158.4 MB allocated; at 32×32 at 318.5 MB",
          (Citation(NOTES_000, (2590, 2640), span=True),),
          "显存消耗为 4158.44775390625 MB … 显存消耗为 318.5234375 MB",
          {224: 4158.44775390625, 32: 318.5234375}),  # input size → MiB (the notes divide by 1024² and say MB)
)


def claim(key: str) -> Claim:
    """The entry of :data:`CLAIMS` with this key."""
    return next(c for c in CLAIMS if c.key == key)
