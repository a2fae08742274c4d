using System.Globalization;
using System.Text.RegularExpressions;

namespace GpuExecutor.Gpus;

/// <summary>How two GPUs are connected, best first; <see cref="Rank"/> orders them.</summary>
/// <param name="NvLinks">The number of NVLinks for <see cref="GpuLinkKind.NvLink"/>, else 0.</param>
public readonly record struct GpuLink(GpuLinkKind Kind, int NvLinks)
{
    /// <summary>Higher is better: any NVLink beats any PCIe path, more links beat fewer.</summary>
    public int Rank => Kind == GpuLinkKind.NvLink ? 100 + NvLinks : 60 - (int)Kind * 10;

    public override string ToString() => Kind switch
    {
        GpuLinkKind.NvLink => $"NV{NvLinks}",
        GpuLinkKind.SamePcieSwitch => "PIX",
        GpuLinkKind.PcieSwitches => "PXB",
        GpuLinkKind.HostBridge => "PHB",
        GpuLinkKind.NumaNode => "NODE",
        _ => "SYS",
    };
}

/// <summary>The legend of `nvidia-smi topo -m`, best first.</summary>
public enum GpuLinkKind
{
    NvLink = 0,
    /// <summary>PIX: at most one PCIe switch between them.</summary>
    SamePcieSwitch = 1,
    /// <summary>PXB: several PCIe switches, no host bridge.</summary>
    PcieSwitches = 2,
    /// <summary>PHB: through a PCIe host bridge (the CPU).</summary>
    HostBridge = 3,
    /// <summary>NODE: between host bridges within one NUMA node.</summary>
    NumaNode = 4,
    /// <summary>SYS (SOC on old drivers): across NUMA nodes, over QPI/UPI or similar.</summary>
    System = 5,
}

/// <summary>The GPU-to-GPU part of `nvidia-smi topo -m`.</summary>
public sealed partial class GpuTopology
{
    private readonly Dictionary<(int, int), GpuLink> _links;

    private GpuTopology(Dictionary<(int, int), GpuLink> links) => _links = links;

    /// <summary>No topology known: every pair counts as the worst link, so choice falls to index order.</summary>
    public static GpuTopology Unknown { get; } = new([]);

    public GpuLink Link(int first, int second) =>
        _links.TryGetValue((first, second), out var link) ? link : new GpuLink(GpuLinkKind.System, 0);

    [GeneratedRegex(@"\x1b\[[0-9;]*m")]
    private static partial Regex AnsiEscape();

    [GeneratedRegex(@"^GPU(\d+)$")]
    private static partial Regex GpuLabel();

    [GeneratedRegex(@"^NV(\d+)$")]
    private static partial Regex NvLinkCell();

    /// <summary>
    /// Parses the matrix. Columns are tab-separated (the header may be underlined with ANSI
    /// escapes); NIC rows and columns, the CPU/NUMA affinity columns and the legend are ignored.
    /// </summary>
    public static GpuTopology Parse(string output)
    {
        var lines = AnsiEscape().Replace(output, "").Split('\n').Select(line => line.TrimEnd('\r')).ToList();
        // The header starts with "GPU0" like the rows do, but its next cell is not a link.
        var headerIndex = lines.FindIndex(line => Cells(line) is [var first, .. var rest] && GpuLabel().IsMatch(first) && (rest.Count == 0 || !IsLinkCell(rest[0])));
        if (headerIndex < 0)
            throw new FormatException("nvidia-smi topo -m output has no header row of GPU columns.");

        // Column positions by label: GPU columns keep their GPU index, the others are skipped.
        var header = Cells(lines[headerIndex]);
        var columnGpu = header.Select(label => GpuLabel().Match(label) is { Success: true } match ? int.Parse(match.Groups[1].Value, CultureInfo.InvariantCulture) : -1).ToList();

        var links = new Dictionary<(int, int), GpuLink>();
        foreach (var line in lines.Skip(headerIndex + 1))
        {
            var cells = Cells(line);
            if (cells.Count == 0 || GpuLabel().Match(cells[0]) is not { Success: true } row)
                continue;
            var rowGpu = int.Parse(row.Groups[1].Value, CultureInfo.InvariantCulture);
            for (var column = 0; column < columnGpu.Count && column + 1 < cells.Count; column++)
            {
                var columnIndex = columnGpu[column];
                if (columnIndex < 0 || columnIndex == rowGpu)
                    continue;
                links[(rowGpu, columnIndex)] = ParseCell(cells[column + 1], rowGpu, columnIndex);
            }
        }
        if (links.Count == 0 && columnGpu.Count(index => index >= 0) > 1)
            throw new FormatException("nvidia-smi topo -m output has GPU columns but no GPU rows.");
        return new GpuTopology(links);
    }

    private static bool IsLinkCell(string cell) =>
        cell is "X" or "PIX" or "PXB" or "PHB" or "NODE" or "SYS" or "SOC" || NvLinkCell().IsMatch(cell);

    private static GpuLink ParseCell(string cell, int row, int column)
    {
        if (NvLinkCell().Match(cell) is { Success: true } nvlink)
            return new GpuLink(GpuLinkKind.NvLink, int.Parse(nvlink.Groups[1].Value, CultureInfo.InvariantCulture));
        return cell switch
        {
            "PIX" => new GpuLink(GpuLinkKind.SamePcieSwitch, 0),
            "PXB" => new GpuLink(GpuLinkKind.PcieSwitches, 0),
            "PHB" => new GpuLink(GpuLinkKind.HostBridge, 0),
            "NODE" => new GpuLink(GpuLinkKind.NumaNode, 0),
            "SYS" or "SOC" => new GpuLink(GpuLinkKind.System, 0),
            _ => throw new FormatException($"nvidia-smi topo -m: unknown link '{cell}' between GPU{row} and GPU{column}."),
        };
    }

    /// <summary>
    /// The cells of a row, split on tabs and spaces alike (output pasted from a terminal loses its
    /// tabs). Only GPU columns are read, and they come first, before multi-word headers such as
    /// "CPU Affinity", so those splitting apart does no harm.
    /// </summary>
    private static List<string> Cells(string line) =>
        line.Split((char[])['\t', ' '], StringSplitOptions.RemoveEmptyEntries).ToList();
}
