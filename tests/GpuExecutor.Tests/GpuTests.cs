using GpuExecutor.Configuration;
using GpuExecutor.Gpus;
using GpuExecutor.Outcomes;

namespace GpuExecutor.Tests;

public sealed class GpuInventoryTests
{
    internal static string Fixture(string name) =>
        File.ReadAllText(Path.Combine(AppContext.BaseDirectory, "Fixtures", "nvidia-smi", name));

    [Theory]
    [InlineData("l4-1.query.txt", 1, "NVIDIA L4")]
    [InlineData("a100-2.query.txt", 2, "NVIDIA A100 80GB PCIe")]
    [InlineData("a100-4-mig.query.txt", 4, "NVIDIA A100-SXM4-40GB")]
    [InlineData("h100-8.query.txt", 8, "NVIDIA H100 80GB HBM3")]
    [InlineData("v100-2.old-driver.query.txt", 2, "Tesla V100-SXM2-16GB")]
    public void Query_output_for_each_host_gives_every_gpu(string fixture, int count, string name)
    {
        var gpus = NvidiaSmiQuery.Parse(Fixture(fixture));

        Assert.Equal(count, gpus.Count);
        Assert.Equal(Enumerable.Range(0, count), gpus.Select(gpu => gpu.Index));
        Assert.All(gpus, gpu => Assert.Equal(name, gpu.Name));
        Assert.All(gpus, gpu => Assert.StartsWith("GPU-", gpu.Uuid));
        Assert.Equal(gpus.Count, gpus.Select(gpu => gpu.Uuid).Distinct().Count());
    }

    [Fact]
    public void The_h100_line_reads_field_by_field()
    {
        var gpu = NvidiaSmiQuery.Parse(Fixture("h100-8.query.txt"))[7];

        Assert.Equal(new GpuDevice(7, "GPU-60a38f72-d1bb-9487-f563-7280a0a3b4c5", "NVIDIA H100 80GB HBM3", 81559, 79871, 100, MigEnabled: false), gpu);
    }

    [Fact]
    public void Not_available_fields_and_mig_mode_are_tolerated()
    {
        var gpus = NvidiaSmiQuery.Parse(Fixture("a100-4-mig.query.txt"));
        var l4 = NvidiaSmiQuery.Parse(Fixture("l4-1.query.txt")).Single();
        var old = NvidiaSmiQuery.Parse(Fixture("v100-2.old-driver.query.txt"));

        Assert.True(gpus[0].MigEnabled);
        Assert.Null(gpus[0].MemoryUsedMiB);
        Assert.Null(gpus[0].UtilizationPercent);
        Assert.Equal(40960, gpus[0].MemoryTotalMiB);
        Assert.False(gpus[1].MigEnabled);
        Assert.False(l4.MigEnabled);
        Assert.Null(old[1].UtilizationPercent);
    }

    [Theory]
    [InlineData("0, GPU-1234abcd, NVIDIA L4, 23034")]
    [InlineData("zero, GPU-1234abcd, NVIDIA L4, 23034, 0, 0, Disabled")]
    [InlineData("0, 1234abcd, NVIDIA L4, 23034, 0, 0, Disabled")]
    public void Malformed_query_output_is_an_error_naming_the_line(string line)
    {
        var error = Assert.Throws<FormatException>(() => NvidiaSmiQuery.Parse("\n" + line + "\n"));

        Assert.Contains("line 2", error.Message);
    }

    [Fact]
    public void An_nvswitch_host_links_every_pair_by_nvlink_and_ignores_nic_columns()
    {
        var topology = GpuTopology.Parse(Fixture("h100-8.topo.txt"));

        for (var first = 0; first < 8; first++)
            for (var second = 0; second < 8; second++)
                if (first != second)
                    Assert.Equal(new GpuLink(GpuLinkKind.NvLink, 18), topology.Link(first, second));
    }

    [Fact]
    public void A_mixed_pcie_host_reads_each_link_kind()
    {
        var topology = GpuTopology.Parse(Fixture("mixed-pcie-4.topo.txt"));

        Assert.Equal(new GpuLink(GpuLinkKind.NvLink, 4), topology.Link(0, 1));
        Assert.Equal(new GpuLink(GpuLinkKind.SamePcieSwitch, 0), topology.Link(2, 3));
        Assert.Equal(new GpuLink(GpuLinkKind.System, 0), topology.Link(1, 2));
        Assert.Equal("PIX", topology.Link(3, 2).ToString());
    }

    [Fact]
    public void A_single_gpu_host_has_a_topology_with_no_links()
    {
        var topology = GpuTopology.Parse(Fixture("l4-1.topo.txt"));

        Assert.Equal(GpuLinkKind.System, topology.Link(0, 1).Kind);
    }

    [Fact]
    public void Topology_output_without_gpu_columns_is_an_error() =>
        Assert.Throws<FormatException>(() => GpuTopology.Parse("No devices were found\n"));

    [Fact]
    public void Link_ranks_put_nvlink_before_the_same_switch_before_other_sockets()
    {
        GpuLink[] ordered =
        [
            new(GpuLinkKind.NvLink, 18), new(GpuLinkKind.NvLink, 1), new(GpuLinkKind.SamePcieSwitch, 0),
            new(GpuLinkKind.PcieSwitches, 0), new(GpuLinkKind.HostBridge, 0), new(GpuLinkKind.NumaNode, 0), new(GpuLinkKind.System, 0),
        ];

        Assert.Equal(ordered.Select(link => link.Rank).OrderDescending(), ordered.Select(link => link.Rank));
        Assert.Equal(ordered.Length, ordered.Select(link => link.Rank).Distinct().Count());
    }
}

public sealed class GpuSelectionTests
{
    private static List<GpuDevice> Gpus(params int[] indexes) =>
        indexes.Select(index => new GpuDevice(index, $"GPU-{index:D8}-0000-0000-0000-000000000000", "NVIDIA H100 80GB HBM3", 81559, 0, 0, false)).ToList();

    [Fact]
    public void On_an_nvswitch_host_any_set_is_as_good_so_the_lowest_indexes_win()
    {
        var topology = GpuTopology.Parse(GpuInventoryTests.Fixture("h100-8.topo.txt"));

        var chosen = GpuSelection.Choose(Gpus(1, 2, 3, 5, 6, 7), 4, topology)!;

        Assert.Equal([1, 2, 3, 5], chosen.Select(gpu => gpu.Index));
    }

    [Fact]
    public void On_a_mixed_pcie_host_a_pair_on_one_switch_beats_a_pair_across_sockets()
    {
        var topology = GpuTopology.Parse(GpuInventoryTests.Fixture("mixed-pcie-4.topo.txt"));

        Assert.Equal([2, 3], GpuSelection.Choose(Gpus(1, 2, 3), 2, topology)!.Select(gpu => gpu.Index));
        Assert.Equal([0, 1], GpuSelection.Choose(Gpus(0, 1, 2, 3), 2, topology)!.Select(gpu => gpu.Index));
    }

    [Fact]
    public void On_a_cube_mesh_the_chosen_pair_has_the_most_nvlinks()
    {
        var topology = GpuTopology.Parse(GpuInventoryTests.Fixture("dgx1-8.topo.txt"));

        // Free: 0, 1, 3. 0-1 is NV1, 1-3 is NV1, 0-3 is NV2.
        Assert.Equal([0, 3], GpuSelection.Choose(Gpus(0, 1, 3), 2, topology)!.Select(gpu => gpu.Index));
        // Four GPUs all linked by NVLink (0-1-2-3) beat any set that crosses sockets.
        var four = GpuSelection.Choose(Gpus(0, 1, 2, 3, 4, 5), 4, topology)!;
        Assert.Equal([0, 1, 2, 3], four.Select(gpu => gpu.Index));
    }

    [Fact]
    public void Too_few_candidates_give_no_choice_and_zero_gpus_give_an_empty_one()
    {
        Assert.Null(GpuSelection.Choose(Gpus(0), 2, GpuTopology.Unknown));
        Assert.Empty(GpuSelection.Choose(Gpus(0), 0, GpuTopology.Unknown)!);
    }

    [Fact]
    public void A_large_host_is_chosen_greedily_and_still_well()
    {
        var topology = GpuTopology.Parse(GpuInventoryTests.Fixture("dgx1-8.topo.txt"));
        var many = Gpus(Enumerable.Range(0, 8).ToArray());

        var chosen = GpuSelection.Choose(many, 4, topology)!;

        Assert.Equal(4, chosen.Count);
        Assert.True(GpuSelection.Score(chosen, topology).Weakest >= new GpuLink(GpuLinkKind.NvLink, 1).Rank);
    }
}

public sealed class GpuRequestTests
{
    private static readonly GpuSettings Settings = new() { DefaultCount = 1, MaxCount = 8 };

    private static GpuRequest Parse(params (string Key, string Value)[] variables) =>
        GpuRequest.FromJob(variables.ToDictionary(pair => pair.Key, pair => pair.Value), Settings);

    [Fact]
    public void Unset_variables_take_the_runners_defaults() =>
        Assert.Equal(new GpuRequest(1, null, null), Parse());

    [Theory]
    [InlineData("40GiB", 40960)]
    [InlineData("80gib", 81920)]
    [InlineData("80Gi", 81920)]
    [InlineData("80G", 76294)]
    [InlineData("80GB", 76294)]
    [InlineData("141G", 134469)]
    [InlineData("24576", 24576)]
    [InlineData("24576MiB", 24576)]
    [InlineData("24576M", 23438)]
    [InlineData("1.5g", 1431)]
    [InlineData("1.5 GiB", 1536)]
    public void Memory_is_read_in_the_usual_spellings(string text, long mebibytes) =>
        Assert.Equal(mebibytes, Parse(("GPU_MIN_MEMORY", text)).MinimumMemoryMiB);

    [Fact]
    public void Count_memory_and_model_are_read_together() =>
        Assert.Equal(new GpuRequest(4, 76294, "H100"), Parse(("GPU_COUNT", "4"), ("GPU_MIN_MEMORY", "80G"), ("GPU_MODEL", "H100")));

    [Theory]
    [InlineData("GPU_COUNT", "-1")]
    [InlineData("GPU_COUNT", "abc")]
    [InlineData("GPU_COUNT", "1e9")]
    [InlineData("GPU_COUNT", "")]
    [InlineData("GPU_COUNT", "2.5")]
    [InlineData("GPU_COUNT", " 2")]
    [InlineData("GPU_MIN_MEMORY", "-1")]
    [InlineData("GPU_MIN_MEMORY", "abc")]
    [InlineData("GPU_MIN_MEMORY", "1e9")]
    [InlineData("GPU_MIN_MEMORY", "")]
    [InlineData("GPU_MIN_MEMORY", "0")]
    [InlineData("GPU_MIN_MEMORY", "80X")]
    [InlineData("GPU_MIN_MEMORY", "80 G B")]
    [InlineData("GPU_MIN_MEMORY", "99999999T")]
    [InlineData("GPU_MODEL", "")]
    [InlineData("GPU_MODEL", "H100; rm -rf /")]
    [InlineData("GPU_MODEL", "$(id)")]
    public void Malformed_values_are_build_failures_that_name_the_variable(string key, string value)
    {
        var error = Assert.Throws<BuildFailureException>(() => Parse((key, value)));

        Assert.StartsWith($"{key} '", error.Message);
    }

    [Fact]
    public void More_than_the_runners_maximum_is_refused_and_says_so()
    {
        var error = Assert.Throws<BuildFailureException>(() => Parse(("GPU_COUNT", "9")));

        Assert.Contains("at most 8 per job (gpus.max_count)", error.Message);
    }

    [Fact]
    public void A_gpu_is_admitted_by_model_part_and_memory()
    {
        var h100 = new GpuDevice(0, "GPU-x", "NVIDIA H100 80GB HBM3", 81559, 0, 0, false);

        Assert.True(new GpuRequest(1, 40960, "h100").Admits(h100));
        Assert.False(new GpuRequest(1, 90000, null).Admits(h100));
        Assert.False(new GpuRequest(1, null, "A100").Admits(h100));
    }
}
