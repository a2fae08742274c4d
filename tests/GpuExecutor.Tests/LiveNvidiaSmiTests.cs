using GpuExecutor.Configuration;
using GpuExecutor.Gpus;

namespace GpuExecutor.Tests;

/// <summary>
/// nvidia-smi as recorded live on an H200 and an H100 host by scripts/check-live-gpu.sh (driver
/// 580.159.04; see the *.live.check.log beside each fixture). Unlike the hand-written fixtures,
/// these are byte for byte what the driver prints, ANSI escapes and padding included.
/// </summary>
public sealed class LiveNvidiaSmiTests
{
    private static string Fixture(string name) => GpuInventoryTests.Fixture(name);

    [Theory]
    [InlineData("h200-1", "GPU-c3204b4c-b609-2b02-a953-d6ad5c448e3a", "NVIDIA H200", 143771)]
    [InlineData("h100-1", "GPU-5cf90472-8537-2add-91e4-494e04226f2b", "NVIDIA H100 80GB HBM3", 81559)]
    public void The_live_query_reads_field_by_field(string host, string uuid, string name, long totalMiB)
    {
        var gpu = NvidiaSmiQuery.Parse(Fixture($"{host}.live.query.txt")).Single();

        Assert.Equal(new GpuDevice(0, uuid, name, totalMiB, 0, 0, MigEnabled: false), gpu);
    }

    [Theory]
    [InlineData("h200-1", 99)]
    [InlineData("h100-1", 94)]
    public void A_gpu_whose_memory_another_process_holds_reads_as_busy(string host, int utilization)
    {
        var gpu = NvidiaSmiQuery.Parse(Fixture($"{host}.live-busy.query.txt")).Single();

        // The recording held 8 GiB through PyTorch; the driver counts its context on top.
        Assert.Equal(9075, gpu.MemoryUsedMiB);
        Assert.Equal(utilization, gpu.UtilizationPercent);
        Assert.True(gpu.MemoryUsedMiB > new GpuSettings().BusyMemoryMiB);
    }

    [Theory]
    [InlineData("h200-1")]
    [InlineData("h100-1")]
    public void The_live_matrix_with_its_underlined_header_parses_to_a_single_gpu(string host)
    {
        var raw = Fixture($"{host}.live.topo.txt");
        var topology = GpuTopology.Parse(raw);

        Assert.Contains("\u001b[4m", raw);
        Assert.Equal(GpuLinkKind.System, topology.Link(0, 1).Kind);
    }

    [Theory]
    [InlineData("h200-1")]
    [InlineData("h100-1")]
    public void The_in_container_check_reads_the_same_uuids_as_the_inventory(string host)
    {
        var inventory = NvidiaSmiQuery.Parse(Fixture($"{host}.live.query.txt")).Select(gpu => gpu.Uuid);

        Assert.Equal(inventory, NvidiaSmiQuery.ParseVisibleUuids(Fixture($"{host}.live.uuid.txt")));
    }

    [Theory]
    [InlineData("h100-1", "80G", "H100 80GB", true)]
    [InlineData("h100-1", "80GB", "h100", true)]
    [InlineData("h100-1", "80GiB", null, false)]
    [InlineData("h200-1", "141G", "H200", true)]
    [InlineData("h200-1", "141GiB", null, false)]
    [InlineData("h200-1", "80G", "H100", false)]
    public void Memory_asked_for_as_on_the_box_admits_the_gpu_that_says_it(string host, string memory, string? model, bool admitted)
    {
        var gpu = NvidiaSmiQuery.Parse(Fixture($"{host}.live.query.txt")).Single();
        var variables = new Dictionary<string, string> { ["GPU_MIN_MEMORY"] = memory };
        if (model is not null)
            variables["GPU_MODEL"] = model;

        Assert.Equal(admitted, GpuRequest.FromJob(variables, new GpuSettings { DefaultCount = 1, MaxCount = 1 }).Admits(gpu));
    }

    [Fact]
    public void The_recording_script_asks_exactly_what_the_inventory_asks()
    {
        var script = File.ReadAllText(Path.Combine(RepositoryRoot.Path, "scripts", "check-live-gpu.sh"));

        Assert.Contains($"query_arguments=({string.Join(' ', NvidiaSmiQuery.Arguments)})", script);
        Assert.Contains(NvidiaSmiQuery.VisibleUuidsCommand, script);
    }
}

/// <summary>The topology cache, against a stand-in nvidia-smi that counts how often it is asked.</summary>
public sealed class TopologyCacheTests : IDisposable
{
    private readonly string _root = Directory.CreateTempSubdirectory("gpu-executor-topo-").FullName;

    public void Dispose() => Directory.Delete(_root, recursive: true);

    private string FakeNvidiaSmi(string topologyFixture)
    {
        var fixture = Path.Combine(AppContext.BaseDirectory, "Fixtures", "nvidia-smi", topologyFixture);
        var script = Path.Combine(_root, "nvidia-smi");
        File.WriteAllText(script, $"#!/bin/sh\necho asked >> '{_root}/calls'\ncat '{fixture}'\n");
        File.SetUnixFileMode(script, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        return script;
    }

    private int Calls => File.Exists(Path.Combine(_root, "calls")) ? File.ReadAllLines(Path.Combine(_root, "calls")).Length : 0;

    private static IReadOnlyList<GpuDevice> Inventory(int count) =>
        NvidiaSmiQuery.Parse(GpuInventoryTests.Fixture("h100-8.query.txt")).Take(count).ToList();

    [Fact]
    public async Task The_matrix_is_asked_for_once_then_read_from_the_cache_until_the_gpus_change()
    {
        var nvidiaSmi = new NvidiaSmi(FakeNvidiaSmi("h100-8.topo.txt"));
        var cache = Path.Combine(_root, "state", "gpus");
        var token = TestContext.Current.CancellationToken;

        var first = await nvidiaSmi.TopologyAsync(Inventory(8), cache, _ => { }, token);
        var second = await nvidiaSmi.TopologyAsync(Inventory(8), cache, _ => { }, token);
        Assert.Equal(1, Calls);
        Assert.Equal(new GpuLink(GpuLinkKind.NvLink, 18), first.Link(2, 5));
        Assert.Equal(first.Link(2, 5), second.Link(2, 5));

        // A GPU gone from the bus is a different host as far as the cache is concerned.
        await nvidiaSmi.TopologyAsync(Inventory(7), cache, _ => { }, token);
        Assert.Equal(2, Calls);
    }

    [Fact]
    public async Task A_damaged_cache_is_ignored_and_replaced()
    {
        var nvidiaSmi = new NvidiaSmi(FakeNvidiaSmi("mixed-pcie-4.topo.txt"));
        var cache = Path.Combine(_root, "gpus");
        var token = TestContext.Current.CancellationToken;
        await nvidiaSmi.TopologyAsync(Inventory(4), cache, _ => { }, token);
        var file = Directory.GetFiles(cache).Single();
        var keyLine = File.ReadAllLines(file)[0];
        File.WriteAllText(file, keyLine + "\nnot a matrix\n");

        var topology = await nvidiaSmi.TopologyAsync(Inventory(4), cache, _ => { }, token);

        Assert.Equal(2, Calls);
        Assert.Equal(new GpuLink(GpuLinkKind.SamePcieSwitch, 0), topology.Link(2, 3));
        Assert.Equal(File.ReadAllText(Path.Combine(AppContext.BaseDirectory, "Fixtures", "nvidia-smi", "mixed-pcie-4.topo.txt")), string.Join('\n', File.ReadAllText(file).Split('\n').Skip(1)));
    }

    [Fact]
    public async Task A_cache_that_cannot_be_written_is_a_warning_and_the_matrix_still_comes()
    {
        var nvidiaSmi = new NvidiaSmi(FakeNvidiaSmi("mixed-pcie-4.topo.txt"));
        // A file where the cache directory should be: nothing can be created under it.
        var blocked = Path.Combine(_root, "not-a-directory");
        File.WriteAllText(blocked, "");
        var warnings = new List<string>();

        var topology = await nvidiaSmi.TopologyAsync(Inventory(4), Path.Combine(blocked, "gpus"), warnings.Add, TestContext.Current.CancellationToken);

        Assert.Equal(new GpuLink(GpuLinkKind.NvLink, 4), topology.Link(0, 1));
        Assert.Contains(warnings, warning => warning.Contains("could not cache the GPU topology", StringComparison.Ordinal));
    }

    [Fact]
    public async Task Without_a_cache_directory_every_call_asks_the_driver()
    {
        var nvidiaSmi = new NvidiaSmi(FakeNvidiaSmi("l4-1.topo.txt"));
        var token = TestContext.Current.CancellationToken;

        await nvidiaSmi.TopologyAsync(Inventory(1), null, _ => { }, token);
        await nvidiaSmi.TopologyAsync(Inventory(1), null, _ => { }, token);

        Assert.Equal(2, Calls);
    }
}
